// ckpt dump: freeze → collect task state → files → memory → write images →
// kill, release or leave stopped. Until the images are complete nothing is
// changed for the task: any failure releases it running and removes what was
// written, so no directory that restore would accept is left behind.
import { create } from "@bufbuild/protobuf";
import { newMessage } from "../images/codec.ts";
import {
  CgroupsImageSchema,
  type FdEntry,
  FdTableSchema,
  type FileEntry,
  FileKind,
  FilesImageSchema,
  MmImageSchema,
  NamespacesImageSchema,
  PagemapImageSchema,
  type PageRun,
  type TaskCore,
  TaskCoreSchema,
  TcpMode,
  type Vma,
} from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import {
  CGROUPS,
  coreName,
  fdName,
  FILES,
  ImageDir,
  mmName,
  NAMESPACES,
  pagemapName,
  pagesName,
} from "../images/dir.ts";
import { ImageKind, PAGE_SIZE } from "../images/format.ts";
import { NoProcess, processExists } from "../proc/read.ts";
import { readStat } from "../proc/status.ts";
import { log } from "../util/log.ts";
import { formatBytes, formatMs } from "../util/units.ts";
import { BlockedDump, type Blocker, FileCollector } from "../files/collect.ts";
import { cttyBlockers } from "../files/ctty.ts";
import { freezeTree, Frozen, type FrozenTask } from "./freeze.ts";
import { capRuns, collectVmas, hasRuns, planPages, type SharedClaims } from "./memory.ts";
import { MemoryTracker, trackingLeftIn } from "./tracking.ts";
import { type DryRunReport, dryRunReport } from "./dry_run.ts";
import { DumpOutput } from "./output.ts";
import { faultPoint } from "../util/fault.ts";
import { coverage, parentPath } from "../images/chain.ts";
import { parsePreDump } from "../images/verify.ts";
import { collectTask, collectZombie } from "./task_state.ts";
import { Snapshots } from "./snapshot.ts";
import { sameObject } from "../native/mod.ts";
import { anonfd, CLOCK_MONOTONIC } from "../native/anonfd.ts";
import { readInPlace, vmFlagsOf } from "../task/vma_flags.ts";
import { requireDumpCapabilities } from "../check/caps.ts";
import { notifier, type Notify } from "../util/actions.ts";
import { type DumpStats, us, writeDumpStats } from "../images/criu_stats.ts";
import { countPages, noPages } from "./stats.ts";
import { collectSeccomp, refuseUnsuspended, seccompModes, type TaskSeccomp } from "./seccomp.ts";
import { planSessions, SessionError, sessionTasks } from "../restore/sessions.ts";
import { collectNamespaces, namespaceBlockers, ownKinds, treePidLevels } from "../ns/dump.ts";
import { inNamespacesOf } from "../ns/enter.ts";
import { dumpExternals, dumpMounts } from "../mount/dump.ts";
import { setDumpRoot, setTreeMounts } from "../mount/view.ts";
import { CgroupCollector, type CgroupDumpOptions } from "../cgroup/dump.ts";
import { type CgroupFreezer, freezeThrough, frozenCgroupOf } from "../cgroup/freezer.ts";
import { hierarchyMounts } from "../cgroup/hierarchy.ts";
import { readProcLocksAsync } from "../files/locks.ts";

export interface DumpOptions {
  /** Root of the tree to dump. */
  pid: number;
  /** Images directory (created 0700 if missing; must hold no images). */
  dir: string;
  /** Let the tree run on after the dump (CRIU's -R). */
  leaveRunning?: boolean;
  /** Leave the tree stopped (SIGSTOP) after the dump (CRIU's -s). */
  leaveStopped?: boolean;
  /** The tree belongs to a terminal session it does not lead. */
  shellJob?: boolean;
  /** --ext-unix-sk values: "" (bare: one-way DGRAM clients) or ID[,ID…]. */
  extUnixSk?: string[];
  /** --external values, e.g. "unix[INO]", "veth[eth0]:vh0", "mnt[/data]:data". */
  external?: string[];
  /** --empty-ns net: a network namespace of the tree's own is saved empty;
   * its content is the caller's to set up again at restore. */
  emptyNet?: boolean;
  /** --ext-mount-map MOUNTPOINT:KEY (CRIU's older spelling of
   * --external mnt[MOUNTPOINT]:KEY). */
  extMountMap?: string[];
  /** --prev-images-dir: a pre-dump (relative to dir unless absolute); pages
   * not written since it are left there. */
  prevImagesDir?: string;
  /** --dry-run: freeze, look at everything, write nothing, let it run on;
   * the result's dryRun says what would be saved and what blocks. */
  dryRun?: boolean;
  /** Called at CRIU's action-script moments: pre-dump before the tree is
   * frozen, post-dump once the images are written and before the tree is
   * killed or let go (network-lock/unlock around the freeze are for TCP).
   * Throwing fails the dump, which then releases the tree as it was. */
  notify?: Notify;
  /** --manage-cgroups, --cgroup-root, --cgroup-props, --cgroup-dump-controller. */
  cgroups?: Omit<CgroupDumpOptions, "frozen">;
  /** --freeze-cgroup: a v1 freezer or v2 cgroup directory holding the tree,
   * frozen while the tree is seized so that nothing in it forks meanwhile. */
  freezeCgroup?: string;
  /** --tcp-established: live TCP connections are locked and saved. */
  tcpEstablished?: boolean;
  /** --tcp-close: live TCP connections are restored reset. */
  tcpClose?: boolean;
  /** --skip-in-flight: connections no accept() took yet are left behind. */
  skipInFlight?: boolean;
}

export interface DumpResult {
  pid: number;
  dir: string;
  pagesBytes: number;
  /** Time the tree was frozen. */
  frozenMs: number;
  totalMs: number;
  /** With dryRun: what a dump would save, and every blocker. */
  dryRun?: DryRunReport;
  /** CRIU's dump statistics, also written to DIR/stats-dump (not for a
   * dry run). */
  stats?: DumpStats;
}

export async function dump(opts: DumpOptions): Promise<DumpResult> {
  const t0 = performance.now();
  const { pid } = opts;
  if (opts.leaveRunning && opts.leaveStopped) {
    throw new DumpError("--leave-running and --leave-stopped exclude each other");
  }
  if (pid === Deno.pid) throw new DumpError("ckpt cannot dump itself");
  if (!processExists(pid)) throw new NoProcess(pid);
  const dryRun = !!opts.dryRun;
  refuseUndumpable(pid, !opts.leaveRunning && !opts.leaveStopped && !dryRun);
  if (dryRun && (opts.leaveStopped || opts.prevImagesDir)) {
    throw new DumpError("--dry-run leaves the tree running and reads no parent images");
  }
  const prev = opts.prevImagesDir
    ? parsePreDump(parentPath(opts.dir, opts.prevImagesDir))
    : undefined;

  const out = dryRun ? undefined : new DumpOutput(ImageDir.create(opts.dir));
  const frozen = new Frozen();
  const snapshots = new Snapshots();
  const tracker = new MemoryTracker();
  let tFrozen = 0;
  let frozenMs = -1;
  let files: FileCollector | undefined;
  let freezer: CgroupFreezer | undefined;
  const notify = notifier(opts.notify, (m) => new DumpError(m));
  const pages = noPages();
  let memdumpMs = 0;
  const own = ownKinds(pid);
  const mountExternals = dumpExternals(opts.external ?? [], opts.extMountMap);
  // Paths the tree's files have are its own mount namespace's.
  const leaveView = setDumpRoot(own.includes("mnt") ? pid : undefined);
  try {
    if (!dryRun) notify("pre-dump");
    const tFreeze = performance.now();
    if (opts.freezeCgroup) freezer = freezeThrough(opts.freezeCgroup, pid, frozen);
    const cgMounts = hierarchyMounts();
    const tree = freezeTree(pid, frozen, (p) => refuseFrozen(p, cgMounts, opts.freezeCgroup));
    // Threads of the freezer cgroup that are not the tree's go at once.
    if (freezer) frozen.releaseExcept(new Set(tree.flatMap((t) => t.tids)));
    tFrozen = performance.now();
    const procLocks = readProcLocksAsync();
    faultPoint("frozen");
    files = new FileCollector({
      shellJob: !!opts.shellJob,
      frozenAtNs: anonfd.clockNs(CLOCK_MONOTONIC),
      unix: { extUnixSk: opts.extUnixSk ?? [], external: opts.external ?? [] },
      net: {
        tcpEstablished: !!opts.tcpEstablished,
        tcpClose: !!opts.tcpClose,
        skipInFlight: !!opts.skipInFlight,
      },
      pids: tree.filter((t) => !t.zombie).map((t) => t.pid),
    });
    // Every blocker of the tree is gathered (files, mappings, task state)
    // before refusing, so one refusal names them all.
    const shared = sharedTables(tree, files.blockers);
    const cgroups = new CgroupCollector({
      ...opts.cgroups,
      frozen: freezer &&
        { hierarchy: freezer.hierarchy, path: freezer.path, wasFrozen: freezer.wasFrozen },
    }, cgMounts);
    files.blockers.push(...cgroups.collect(tree));
    for (const t of tree) {
      if (t.zombie) continue;
      files.blockers.push(...scopeBlockers(t.pid, t.pid === pid, !!opts.shellJob, pid));
    }
    // Each task's pid at every PID namespace level goes into its core.
    const levels = treePidLevels(tree, files.blockers);
    const mounts = own.includes("mnt")
      ? dumpMounts(
        pid,
        { external: mountExternals, ownCgroupNs: own.includes("cgroup") },
        files.blockers,
      )
      : undefined;
    if (mounts) setTreeMounts(mounts.mounts.map((m) => m.id));
    const claims: SharedClaims = new Map();
    // Write tracking a pre-dump left: taken over, then its fds closed in the
    // tasks before their fd tables are read.
    const kept = new Set<number>();
    for (const pm of prev?.pagemaps.values() ?? []) tracker.remember(pm.tracking);
    for (const t of tree) {
      if (!t.zombie && prev && tracker.adopt(t.pid, prev.pagemaps.get(t.pid)?.tracking)) {
        kept.add(t.pid);
      }
    }
    // A dry run leaves the tracking where it is, not the tasks' own files.
    const running = tree.filter((t) => !t.zombie).map((t) => t.pid);
    const tTables = performance.now();
    for (const p of running) files.table(p);
    log.debug(`fd tables read in ${formatMs(performance.now() - tTables)}`);
    if (dryRun) {
      for (const p of running) files.skip(p, trackingLeftIn(p, files.table(p)));
    } else {
      const closed = tracker.closeInTasks(running, false, (p) => files!.table(p));
      for (const [p, fds] of closed) files.skip(p, fds);
    }
    // Phase 1, frozen: everything but the page contents.
    const live: { t: FrozenTask; core: TaskCore; fds: FdEntry[]; vmas: Vma[]; runs: PageRun[] }[] =
      [];
    const cores: TaskCore[] = [];
    // Sockets are looked up (sock_diag) in the tree's network namespace:
    // ckpt's thread is inside it for this synchronous stretch.
    const collector = files;
    inNamespacesOf(pid, ["net"], () => {
      const files = collector;
      for (const t of tree) {
        const p = t.pid;
        if (t.zombie) {
          try {
            const z = levels.apply(collectZombie(p));
            z.cgroupSet = cgroups.setOf(p);
            cores.push(z);
            out?.write(coreName(p), ImageKind.Core, TaskCoreSchema, z);
          } catch (err) {
            if (!(err instanceof DumpError)) throw err;
            files.blockers.push({ pid: p, message: err.message });
          }
          continue;
        }
        // Seccomp before anything is injected: a task it blocks is left alone.
        let seccomp: TaskSeccomp;
        try {
          if (!frozen.suspendsSeccomp) refuseUnsuspended(p, seccompModes(p, t.tids));
          seccomp = collectSeccomp(p, t.tids);
        } catch (err) {
          if (!(err instanceof DumpError)) throw err;
          files.blockers.push({ pid: p, message: err.message });
          continue;
        }
        let core: TaskCore;
        try {
          core = levels.apply(collectTask(p, t.tids, { waits: frozen.waits, seccomp }));
        } catch (err) {
          if (!(err instanceof BlockedDump)) throw err;
          files.blockers.push(...err.blockers);
          continue;
        }
        cores.push(core);
        core.cgroupSet = cgroups.setOf(p);
        for (const th of core.threads) th.cgroupSet = cgroups.setOfThread(th.tid);
        core.sharesFiles = shared.get(p)?.files ?? false;
        core.sharesFs = shared.get(p)?.fs ?? false;
        core.cwdFileId = files.addPath(
          FileKind.FILE_DIR,
          Deno.readLinkSync(`/proc/${p}/cwd`),
          `/proc/${p}/cwd`,
        );
        core.rootFileId = files.addPath(
          FileKind.FILE_DIR,
          Deno.readLinkSync(`/proc/${p}/root`),
          `/proc/${p}/root`,
        );
        if (core.mm) {
          core.mm.exeFileId = files.addPath(FileKind.FILE_REG, core.exe, `/proc/${p}/exe`);
        }
        const fds = files.collectFds(p);
        let vmas: Vma[];
        try {
          vmas = collectVmas(p, files, vmFlagsOf(core));
        } catch (err) {
          if (err instanceof BlockedDump) files.blockers.push(...err.blockers);
          else if (err instanceof DumpError) files.blockers.push({ pid: p, message: err.message });
          else throw err;
          continue;
        }
        const tPlan = performance.now();
        const cov = kept.has(p) ? coverage(prev!.pagemaps.get(p)!) : undefined;
        const runs = capRuns(planPages(p, vmas, claims, cov));
        memdumpMs += performance.now() - tPlan;
        countPages(pages, vmas, runs);
        log.debug(`pid ${p}: pages planned in ${formatMs(performance.now() - tPlan)}`);
        live.push({ t, core, fds, vmas, runs });
      }
      tracker.dispose();
      // With every task's state taken (a task already refused is said anyway).
      const sessions = cores.length === tree.length && sessionBlocker(cores, !!opts.shellJob);
      if (sessions) files.blockers.push({ pid, message: sessions });
      files.finish(live.map((l) => l.t.pid));
    });
    if (own.includes("net")) files.blockers.push(...liveTcpInOwnNet(files.files));
    const tables = new Map(
      live.map((l) => [l.t.pid, newMessage(FdTableSchema, { pid: l.t.pid, fds: l.fds })]),
    );
    files.blockers.push(
      ...files.locks.finish(tree.map((t) => t.pid), tables, await procLocks),
    );
    files.blockers.push(...cttyBlockers(live.map((l) => l.core), files.files, !!opts.shellJob));
    // What the root's own namespaces hold, read while the tree is frozen
    // (only for a tree nothing else blocks: their queues are read by
    // emptying and refilling them).
    const namespaces = files.blockers.length
      ? undefined
      : collectNamespaces(pid, tree.map((t) => t.pid), files.blockers, {
        emptyNs: opts.emptyNet,
        external: opts.external,
      });
    if (namespaces && mounts) namespaces.mnt = mounts;
    files.release();
    log.debug(`files finished after ${formatMs(performance.now() - tFrozen)} frozen`);
    if (dryRun) {
      const report = dryRunReport(pid, tree, live, files);
      files.letGo("run");
      frozenMs = performance.now() - tFrozen;
      frozen.release();
      freezer?.restoreState();
      const totalMs = performance.now() - t0;
      return { pid, dir: "", pagesBytes: report.memoryBytes, frozenMs, totalMs, dryRun: report };
    }
    // Every blocker of the tree at once, the tree released as it was.
    files.throwBlockers();
    faultPoint("collected");
    // With --leave-running the tree goes on as soon as each task has forked
    // a frozen copy of itself; the pages are read from the copies.
    const inPlace = live.find((l) => l.vmas.some((v) => readInPlace(v) && hasRuns(v, l.runs)));
    if (opts.leaveRunning && inPlace) {
      log.info(
        `pid ${inPlace.t.pid} has MADV_DONTFORK or MADV_WIPEONFORK memory, which a fork copy ` +
          `lacks: the tree stays frozen until its pages are written`,
      );
    }
    if (opts.leaveRunning && !inPlace) {
      for (const l of live) snapshots.take(l.t.pid, frozen.options);
      files.letGo("run");
      frozenMs = performance.now() - tFrozen;
      frozen.release();
    }

    // Phase 2: the pages (tasks side by side, as many threads as allowed),
    // then every image.
    if (!out) throw new Error("a dry run writes nothing");
    const tWrite = performance.now();
    const saved = await out.pages(
      live.map(({ t, runs }) => ({ pid: t.pid, runs, source: snapshots.source(t.pid) })),
      dumpWorkers(),
    );
    const memwriteMs = performance.now() - tWrite;
    const pagesBytes = saved.reduce((a, b) => a + b.bytes, 0);
    for (const [i, { t, core, vmas, runs }] of live.entries()) {
      const p = t.pid;
      const pagesFile = pagesName(p);
      const { bytes, parts } = saved[i];
      const leftInParent = runs.filter((r) => r.inParent).reduce((a, r) => a + r.nrPages, 0n);
      log.info(
        `pid ${p}: ${t.tids.length} thread(s), ${vmas.length} mappings, ${runs.length} page runs, ${
          formatBytes(bytes)
        }${
          leftInParent
            ? ` (${formatBytes(Number(leftInParent) * PAGE_SIZE)} left in the parent images)`
            : ""
        }`,
      );

      out.write(coreName(p), ImageKind.Core, TaskCoreSchema, core);
      out.write(
        mmName(p),
        ImageKind.Mm,
        MmImageSchema,
        newMessage(MmImageSchema, { pid: p, vmas }),
      );
      out.write(
        pagemapName(p),
        ImageKind.Pagemap,
        PagemapImageSchema,
        create(PagemapImageSchema, { pid: p, pagesFile, runs, runsCrc32c: true, parts }),
      );
      out.write(
        fdName(p),
        ImageKind.FdTable,
        FdTableSchema,
        tables.get(p)!,
      );
    }
    if (namespaces) out.write(NAMESPACES, ImageKind.Namespaces, NamespacesImageSchema, namespaces);
    out.write(
      FILES,
      ImageKind.Files,
      FilesImageSchema,
      newMessage(FilesImageSchema, { files: files.files }),
    );
    if (cgroups.image) out.write(CGROUPS, ImageKind.Cgroups, CgroupsImageSchema, cgroups.image);
    out.inventory({
      rootPid: pid,
      pids: tree.map((t) => t.pid),
      shellJob: !!opts.shellJob,
      extUnixSk: (opts.extUnixSk ?? []).length > 0,
      parent: opts.prevImagesDir,
    });
    notify("post-dump");

    if (frozenMs < 0) frozenMs = performance.now() - tFrozen;
    log.debug(`images written after ${formatMs(performance.now() - tFrozen)} frozen`);
    // The copies go, and each task reaps its own (stopped briefly again).
    snapshots.dispose();
    if (opts.leaveRunning) {
      // Let go already, unless some memory had to be read in place.
      files.letGo("run");
      frozen.release();
    } else if (opts.leaveStopped) {
      files.letGo("stop");
      frozen.release(19);
    } else {
      files.letGo("kill");
      const survivors = frozen.kill();
      files.letGo("killed");
      if (survivors.length) {
        log.warn(
          `pid(s) ${survivors.join(", ")} did not die of SIGKILL within 10 s and were left ` +
            `running; the images are complete`,
        );
      }
    }
    freezer?.restoreState();
    const totalMs = performance.now() - t0;
    log.info(
      `dumped pid ${pid} to ${opts.dir} in ${formatMs(totalMs)} (frozen ${formatMs(frozenMs)})`,
    );
    const stats: DumpStats = {
      freezing_time: us(tFrozen - tFreeze),
      frozen_time: us(frozenMs),
      memdump_time: us(memdumpMs),
      memwrite_time: us(memwriteMs),
      ...pages,
      pages_lazy: 0,
    };
    writeDumpStats(opts.dir, stats);
    return { pid, dir: opts.dir, pagesBytes, frozenMs, totalMs, stats };
  } catch (err) {
    files?.letGo("fail");
    files?.release();
    tracker.dispose();
    snapshots.dispose();
    frozen.release();
    freezer?.restoreState();
    out?.removeAll();
    throw failureOf(err, pid, "dump");
  } finally {
    leaveView();
    freezer?.close();
  }
}

/** The lock that keeps a live connection quiet (--tcp-established,
 * --tcp-close) is an nftables table of ckpt's own network namespace: in a
 * namespace of the tree's own it would hold nothing back. */
function liveTcpInOwnNet(list: FileEntry[]): Blocker[] {
  return list.filter((f) => f.tcp && f.tcp.mode !== TcpMode.TCP_PLAIN).map((f) => ({
    pid: f.tcp!.sk?.pid ?? 0,
    fd: f.tcp!.sk?.fd,
    kind: "a TCP socket",
    message: `pid ${f.tcp!.sk?.pid} fd ${f.tcp!.sk?.fd}: a live TCP connection in the tree's own ` +
      `network namespace cannot be saved yet (its lock works in ckpt's namespace only): close ` +
      `it before the dump, or dump a tree that shares ckpt's network namespace`,
  }));
}

/** Sessions and groups restore could not make again, said now. */
function sessionBlocker(cores: TaskCore[], shellJob: boolean): string | undefined {
  const inTree = new Set(cores.map((c) => c.pid));
  try {
    planSessions(sessionTasks(cores), {
      shellJob,
      freePid: () => 0,
      livesOutside: (p) => !inTree.has(p) && processExists(p),
    });
  } catch (err) {
    if (err instanceof SessionError) return err.message;
    throw err;
  }
  return undefined;
}

/** A task a cgroup freezer holds would never stop for ptrace: refused
 * (unless it is the --freeze-cgroup ckpt thawed after seizing). */
function refuseFrozen(pid: number, mounts: Map<string, string>, freezeCgroup?: string): void {
  const dir = frozenCgroupOf(pid, mounts);
  if (!dir) return;
  throw new DumpError(
    `pid ${pid} is frozen by the cgroup freezer (${dir}): thaw it, or dump with ` +
      `--freeze-cgroup ${freezeCgroup ?? dir}`,
  );
}

/** A failure of a dump of pid as the user should hear it: a process that
 * died under it is reported as that, whatever call noticed first. */
export function failureOf(err: unknown, pid: number, what: string): unknown {
  if (err instanceof NoProcess || (err instanceof Error && !processExists(pid))) {
    return new DumpError(`pid ${pid} exited during the ${what}; nothing was saved`);
  }
  return err;
}

export function dumpWorkers(): number {
  return Math.max(1, Math.min(8, Number(Deno.env.get("CKPT_DUMP_WORKERS") ?? 2) || 2));
}

/** Which tasks share their fd table (CLONE_FILES) or fs info (CLONE_FS)
 * with their parent. Sharing that does not run along parent links (two
 * tasks whose common table came from neither's parent) cannot be recreated. */
function sharedTables(
  tree: FrozenTask[],
  blockers: Blocker[],
): Map<number, { files: boolean; fs: boolean }> {
  const live = tree.filter((t) => !t.zombie).map((t) => t.pid);
  const parent = new Map(live.map((p) => [p, Number(readStat(p).field(4))]));
  const out = new Map(live.map((p) => {
    const pp = parent.get(p)!;
    const inTree = p !== tree[0].pid && live.includes(pp);
    return [p, { files: inTree && sameObject(pp, p, 2), fs: inTree && sameObject(pp, p, 3) }];
  }));
  const kinds = [[2, "files", "fd table (CLONE_FILES)"], [3, "fs", "fs info (CLONE_FS)"]] as const;
  for (const [kind, key, what] of kinds) {
    const top = (p: number): number => (out.get(p)![key] ? top(parent.get(p)!) : p);
    for (let i = 0; i < live.length; i++) {
      for (let j = i + 1; j < live.length; j++) {
        const [a, b] = [live[i], live[j]];
        if (top(a) !== top(b) && sameObject(a, b, kind)) {
          blockers.push({
            pid: b,
            kind: what,
            message:
              `pids ${a} and ${b} share one ${what} not inherited from a parent; this cannot be dumped yet`,
          });
        }
      }
    }
  }
  return out;
}

/** PF_KTHREAD in the flags field of /proc/PID/stat. */
const PF_KTHREAD = 0x00200000;

/** What is refused before anything is frozen, in one line: ckpt without the
 * capabilities it needs, a zombie, a kernel thread, and — when the dump
 * would end it (`kills`) — the init of ckpt's own PID namespace. */
export function refuseUndumpable(pid: number, kills: boolean): void {
  requireDumpCapabilities(pid);
  const st = readStat(pid);
  if (st.state === "Z") {
    throw new DumpError(
      `pid ${pid} is a zombie (it has exited; its parent has not reaped it): nothing is left to dump`,
    );
  }
  if (Number(st.field(9)) & PF_KTHREAD) {
    throw new DumpError(`pid ${pid} (${st.comm}) is a kernel thread: there is nothing to dump`);
  }
  // The kernel ignores a signal to the init of a PID namespace sent from
  // inside it, SIGKILL included: the dump would never see it die.
  if (pid === 1 && kills) {
    throw new DumpError(
      `pid 1 (${st.comm}) is the init of ckpt's own PID namespace, which ignores SIGKILL from ` +
        `inside it: dump it with --leave-running (or -s), or from the parent namespace`,
    );
  }
}

/** What about task pid itself cannot be dumped: its session (the root
 * must lead one, or be a --shell-job), POSIX timers, other namespaces. */
export function scopeBlockers(
  pid: number,
  root: boolean,
  shellJob: boolean,
  rootPid = pid,
): Blocker[] {
  const out: Blocker[] = [];
  const st = readStat(pid);
  const sid = Number(st.field(6));
  if (root && sid !== pid && !shellJob) {
    out.push({
      pid,
      kind: "session",
      message: `pid ${pid} is in session ${sid}, which it does not lead (started from a shell?); ` +
        `dump it with --shell-job, or start it with setsid`,
    });
  }
  // What ckpt cannot recreate yet is refused, never silently dropped.
  out.push(...namespaceBlockers(pid, rootPid));
  return out;
}

/** The root's scope checked before anything is frozen (pre-dump). */
export function checkScope(pid: number, shellJob: boolean): void {
  refuseUndumpable(pid, false);
  const blockers = scopeBlockers(pid, true, shellJob);
  if (blockers.length) throw new BlockedDump(blockers);
}
