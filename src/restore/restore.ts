// ckpt restore: read and check every image, open everything the tree needs,
// build one plan per task, fork the root with its PID (each task forks its
// children), let the restorers rebuild them, set the final registers over
// ptrace once every thread of every task is ready, and let them go. Any
// failure kills what was started; the images are never modified.
import { sleepSync } from "../util/sleep.ts";
import { type PreDumpSet, readChain } from "../images/chain.ts";
import type { FdTable, MmImage, PagemapImage, TaskCore } from "../gen/ckpt/images_pb.ts";
import { ImageError, RestoreError } from "../errors.ts";
import { CGROUPS, ImageDir, NAMESPACES } from "../images/dir.ts";
import type { ImageSet } from "../images/verify.ts";
import {
  fd as fdops,
  kill,
  NativeError,
  O,
  PTRACE_O_SUSPEND_SECCOMP,
  regionSize,
  restoreSpawn,
  wait,
  WALL,
} from "../native/mod.ts";
import { processExists } from "../proc/read.ts";
import { readStat } from "../proc/status.ts";
import { log } from "../util/log.ts";
import { formatMs } from "../util/units.ts";
import { type FileValidation, OpenedFiles } from "../files/open.ts";
import { regionHints, SharedObjects } from "./memory.ts";
import { bootId } from "../files/authority.ts";
import { requireRestoreCapabilities } from "../check/caps.ts";
import { type BuiltPlan, checkLayout, taskPlan } from "./task_plan.ts";
import {
  CLONE_FILES,
  CLONE_FS,
  type ExternalFill,
  finish,
  LazyServers,
  SEIZE_TREE_OPTIONS,
  superviseRestorers,
} from "./drive.ts";
import { notifier, type Notify } from "../util/actions.ts";
import { type RestoreStats, us, writeRestoreStats } from "../images/criu_stats.ts";
import { hasSeccomp } from "./seccomp.ts";
import type { Born } from "../files/ctty.ts";
import { CHILD, encodedPlanLength, encodePlan, encodeTree, type PlanChild } from "./plan_buffer.ts";
import { planSessions, SessionError, type SessionPlan, sessionTasks } from "./sessions.ts";
import { NamespacePlan } from "../ns/plan.ts";
import type { VethExternal } from "../ns/net/options.ts";
import { validateNamespaces } from "../ns/validate.ts";
import { levelsOf, pidAsSeenBy, setTidOf } from "../ns/pid.ts";
import { inNamespacesOf } from "../ns/enter.ts";
import { TaskIds } from "../ns/ids.ts";
import { CLONE_NEWPID, sendFds } from "../native/ns.ts";
import { SOCK, unixsk } from "../native/unixsk.ts";
import { withRestoreRoot } from "../mount/view.ts";
import { CgroupRestore, type CgroupRestoreOptions } from "../cgroup/restore.ts";
import { validateCgroups } from "../cgroup/validate.ts";

export interface RestoreOptions {
  dir: string;
  /** Return once the tree runs instead of waiting for it (CRIU's -d). */
  detach?: boolean;
  /** Restore a --shell-job dump into this terminal session. */
  shellJob?: boolean;
  fileValidation?: FileValidation;
  /** --inherit-fd: "pipe:[INO]" / "socket:[INO]" / path → ckpt's fd. */
  inherit?: Map<string, number>;
  /** --ext-unix-sk values: "" (bare), "ID[,ID…]", "ID=PATH", "ID=disconnected". */
  extUnixSk?: string[];
  /** --ext-unix-sk-missing: restore sockets whose outside peer is missing disconnected. */
  extUnixSkMissing?: "fail" | "disconnect";
  /** --lazy-pages: let the tree run before its anonymous memory is in, and
   * copy that in through userfaultfd, faults first. With detach, restore
   * returns once every page is in; without, `loaded` settles then. */
  lazyPages?: boolean;
  /** The root becomes a child of ckpt's parent, not of ckpt (CRIU's
   * rst_sibling: runc must be the container's parent). ckpt seizes it
   * instead of it attaching itself. */
  sibling?: boolean;
  /** Called at CRIU's action-script moments: pre-restore before anything is
   * opened or forked, post-restore (with the root's pid) once every task is
   * rebuilt, pre-resume just before the tree runs, post-resume after.
   * Throwing fails the restore (but for post-resume: the tree already runs,
   * so that failure is only logged). */
  notify?: Notify;
  /** --time-ns: restore a tree that shared ckpt's time namespace into a new
   * one whose CLOCK_MONOTONIC and CLOCK_BOOTTIME go on from their values at
   * dump (a tree with a time namespace of its own always gets one). */
  timeNs?: boolean;
  /** --empty-ns net: the tree's own network namespace is made with only its
   * loopback, for the caller to set up at setup-namespaces. */
  emptyNet?: boolean;
  /** --join-ns net:PATH: restore into that existing network namespace. */
  joinNet?: string;
  /** --external veth[IN]:OUT[@BR] and --veth-pair IN=OUT[@BR]: the outside
   * ends of the namespace's veths, by inside name. */
  veths?: Map<string, VethExternal>;
  /** --root: the directory that becomes the root filesystem of a tree with
   * a mount namespace of its own (runc gives the container's). */
  root?: string;
  /** --external mnt[KEY]:PATH / --ext-mount-map KEY:PATH: where the host
   * mounts the tree had (named at dump) are now. */
  externalMounts?: Map<string, string>;
  /** --manage-cgroups and --cgroup-root. */
  cgroups?: CgroupRestoreOptions;
  /** --tcp-established: rebuild the live TCP connections of the image. */
  tcpEstablished?: boolean;
  /** --tcp-close: restore connections dumped with --tcp-close, reset. */
  tcpClose?: boolean;
}

export interface Restored {
  pid: number;
  ms: number;
  /** CRIU's restore statistics, also written to DIR/stats-restore. */
  stats: RestoreStats;
  /** Until the tree was let go: what a lazy restore makes short. */
  firstInstructionMs: number;
  /** Lazy restore without detach: settles once every page is in; rejects
   * (the tree already killed) when a page could not be served. */
  loaded?: Promise<void>;
}

export interface TaskImages {
  core: TaskCore;
  mm?: MmImage;
  pagemap?: PagemapImage;
  fds?: FdTable;
}

/** `checked`: the images as verifyImages read and checked them, and the
 * parent images' chain, used as they are rather than read again. */
export async function restore(
  opts: RestoreOptions,
  checked?: ImageSet & { chain: PreDumpSet[]; reserved?: Promise<void> },
): Promise<Restored> {
  const t0 = performance.now();
  checkLayout();
  const dir = ImageDir.open(opts.dir);
  const inv = checked?.inv ?? dir.readInventory();
  const pid = inv.rootPid;
  if (inv.pids[0] !== pid) {
    throw new RestoreError(`${opts.dir}: the inventory does not start with its root`);
  }
  // Every image is read and checked before anything is forked.
  const tasks = inv.pids.map((p): TaskImages => {
    const known = checked?.tasks.get(p);
    if (known) {
      const { core, mm, pagemap, fdTable } = known;
      return core.zombie ? { core } : { core, mm, pagemap, fds: fdTable };
    }
    const core = dir.readCore(p);
    if (core.zombie) return { core };
    return { core, mm: dir.readMm(p), pagemap: dir.readPagemap(p), fds: dir.readFdTable(p) };
  });
  const files = checked?.files ?? new Map(dir.readFiles().files.map((f) => [f.id, f]));
  const nsImage = checked ? checked.ns : dir.readNamespaces();
  if (nsImage && !checked) {
    validateNamespaces(nsImage, (why) => {
      throw new ImageError(dir.file(NAMESPACES), why);
    });
  }
  // A namespace that was the caller's at dump comes as an inherited fd.
  const netKey = nsImage?.net?.externalKey;
  const inherited = new Map(opts.inherit ?? []);
  let joinNet = opts.joinNet;
  if (netKey && !joinNet) {
    const n = inherited.get(netKey);
    if (n === undefined) {
      throw new RestoreError(
        `the network namespace was the caller's at dump (--external net[…]:${netKey}): give ` +
          `it as --inherit-fd fd[N]:${netKey} or --join-ns net:PATH`,
      );
    }
    joinNet = `/proc/self/fd/${n}`;
  }
  if (netKey) inherited.delete(netKey);
  const ns = NamespacePlan.of(nsImage, {
    timeNs: opts.timeNs,
    emptyNet: opts.emptyNet,
    joinNet,
    veths: opts.veths,
    mounts: { root: opts.root, external: opts.externalMounts ?? new Map() },
  });
  if (opts.root && !ns.mounts) {
    log.info("--root: the tree shares ckpt's mounts (it had no mount namespace of its own)");
  }
  const cores = new Map(tasks.map((t) => [t.core.pid, t.core]));
  const chain = checked?.chain ?? readChain(opts.dir, inv);
  const shellJob = !!(opts.shellJob || inv.shellJob);
  if (inv.shellJob && !opts.shellJob) {
    log.info("dumped with --shell-job: restoring into this session");
  }
  requireRestoreCapabilities(tasks.some((t) => !ownIds(t.core)));
  // In a user namespace of their own, only the root gets its pid at ckpt's
  // level; the others keep theirs inside and get any one here.
  for (const t of ns.freeOuterPids ? tasks.slice(0, 1) : tasks) refuseTaken(t.core.pid);
  // ckpt holds a descriptor for each file, and the tasks' fds are made
  // from them: its table grown once for all (begun while the images were
  // checked, when it was: then only its descriptor is waited for).
  await checked?.reserved;
  fdops.reserve(files.size + tasks.reduce((a, t) => a + (t.fds?.fds.length ?? 0), 0));
  if (tasks[0].core.zombie) {
    throw new RestoreError(`the root pid ${pid} is a zombie: nothing to restore`);
  }
  const notify = notifier(opts.notify, (m) => new RestoreError(m));
  notify("pre-restore");

  // Where every task goes, checked before anything is made or forked.
  let cgImage = checked?.cgroups;
  if (!checked) {
    cgImage = dir.readCgroups();
    if (cgImage) {
      validateCgroups(cgImage, tasks.map((t) => t.core), (why) => {
        throw new ImageError(`${opts.dir}/${CGROUPS}`, why);
      });
    }
  }
  const cgroups = CgroupRestore.plan(cgImage, tasks.map((t) => t.core), opts.cgroups);

  const opened = new OpenedFiles(files, {
    validation: opts.fileValidation ?? "filesize",
    shellJob,
    inherit: inherited,
    unix: { extUnixSk: opts.extUnixSk ?? [], missing: opts.extUnixSkMissing ?? "fail" },
    tasks: tasks.filter((t) => !t.core.zombie).map((t) => t.core),
    sameMachine: inv.bootId !== "" && inv.bootId === bootId(),
    deferNetwork: ns.ownNet,
    // Its files are below its own root, which exists once its mounts do.
    deferAll: !!ns.mounts,
    net: { tcpEstablished: !!opts.tcpEstablished, tcpClose: !!opts.tcpClose },
  });
  const shmem = SharedObjects.of(tasks.map((t) => t.mm?.vmas ?? []));
  const parentFds: number[] = [];
  const started = new Set<number>();
  let status: [number, number] | undefined;
  let late: [number, number] | undefined;
  try {
    ns.mounts?.prepare();
    const live = tasks.filter((t) => !t.core.zombie);
    const index = new Map(live.map((t, i) => [t.core.pid, i]));
    const fills = new Map<number, ExternalFill>();
    const lazy = new Map<number, ExternalFill>();
    const built = new Map<number, BuiltPlan>();
    const sessions = planTreeSessions(tasks.map((t) => t.core), shellJob);
    for (const g of sessions.ghosts) refuseTaken(g);
    for (const t of live) {
      const children = (sessions.forks.get(t.core.pid) ?? []).map((e): PlanChild => {
        const c = e.kind === "task" ? tasks.find((x) => x.core.pid === e.pid)!.core : undefined;
        // A zombie too is forked with its pid at every level; a ghost takes any.
        const own = e.kind === "ghost" ? undefined : cores.get(e.pid);
        const clone = (c?.sharesFiles ? CLONE_FILES : 0) | (c?.sharesFs ? CLONE_FS : 0) |
          (own && levelsOf(own).length > levelsOf(t.core).length ? CLONE_NEWPID : 0);
        if (clone && (e.forker !== -1 || e.when !== "normal")) {
          throw new RestoreError(
            `pid ${e.pid} shares its parent's fd table or fs info and must be forked by a helper; this cannot be restored`,
          );
        }
        return {
          pid: e.pid,
          planIndex: index.get(e.pid) ?? 0,
          kind: { task: CHILD.TASK, zombie: CHILD.ZOMBIE, ghost: CHILD.GHOST }[e.kind],
          exitStatus: e.exitStatus,
          exitSignal: e.exitSignal,
          cloneFlags: clone,
          flags: (e.setsid ? CHILD.SETSID : 0) | (e.setpgid ? CHILD.SETPGID : 0) |
            (e.joinPgid ? CHILD.JOIN_PGID : 0) | (e.when === "early" ? CHILD.EARLY : 0) |
            (e.when === "prejoin" ? CHILD.PREJOIN : 0),
          // A group its forker (a helper in its namespace) joins, as seen there.
          pgid: e.joinPgid ? pidAsSeenBy(e.joinPgid, t.core, cores) : 0,
          forker: e.forker,
          comm: e.comm,
          tids: own ? setTidOf(levelsOf(own), ns.freeOuterPids) : [],
        };
      });
      const sharedParent = t.core.sharesFiles ? built.get(t.core.ppid) : undefined;
      if (
        t.core.sharesFiles && (!sharedParent || children.some((c) => c.kind === CHILD.TASK))
      ) {
        throw new RestoreError(
          `pid ${t.core.pid} shares its parent's fd table and has children of its own; this cannot be restored yet`,
        );
      }
      built.set(
        t.core.pid,
        taskPlan(dir, t, files, opened, shmem, parentFds, opts, fills, lazy, {
          root: t.core.pid === pid,
          shellJob,
          children,
          sharedParent,
          session: sessions.self.get(t.core.pid),
          born: bornOf(sessions, t.core.pid, tasks),
          tree: cores,
          ns,
        }, chain),
      );
    }
    // Files that only exist once the root's namespaces do: the root takes
    // them from ckpt at its first stop and puts them at their placeholders.
    const placeholders = opened.placeholders;
    const rootPlan = built.get(pid)!.plan;
    if (placeholders.length) {
      late = unixsk.pair(SOCK.SEQPACKET);
      rootPlan.lateFds = placeholders;
      rootPlan.lateSock = late[1];
    }
    if (ns.mounts) rootPlan.ops.push(...ns.mounts.ops());
    const plans = live.map((t) => {
      const b = built.get(t.core.pid)!;
      const len = encodedPlanLength(b.plan) + 64 * 8 + 8;
      b.plan.hints = regionHints(b.occupied, BigInt(regionSize(len, b.plan.threads.length)));
      return encodePlan(b.plan);
    });
    const tree = encodeTree(plans);

    // What ckpt puts in the root's new namespaces while the root waits at
    // its first stop (or, seized, before it is let go).
    const sendDeferred = (r: number) => {
      if (!late) return;
      // The fds stay ckpt's too (closed with the others) until the tree runs.
      sendFds(late[0], inNamespacesOf(r, ns.enterable, () => opened.openDeferred()));
    };
    const fillNamespaces = (r: number) => {
      ns.fill(r);
      // CRIU's moment for the caller to set the new namespaces up (runc
      // runs its prestart hooks there, which configure the network).
      if (ns.kinds.length || joinNet) notify("setup-namespaces", r);
      // With a mount tree of its own, the files come once it is built.
      if (!ns.mounts) sendDeferred(r);
    };
    // The root waits in its built mount tree: the tmpfs contents, then the
    // tree's files opened below its root.
    const fillMounts = (r: number) => {
      const t = performance.now();
      ns.mounts!.fill(r);
      const rootFd = fdops.open(`/proc/${r}/root`, O.PATH | O.DIRECTORY | O.CLOEXEC);
      try {
        withRestoreRoot(rootFd, () => sendDeferred(r));
      } finally {
        fdops.close(rootFd);
      }
      log.debug(`mount tree filled and files opened in ${formatMs(performance.now() - t)}`);
    };
    cgroups.prepare();
    status = fdops.pipe(O.CLOEXEC | O.NONBLOCK);
    let root: number;
    try {
      // A sibling root is seized, not stopped: it is put in its cgroups and
      // its namespaces are filled before it is let go.
      root = ns.spawnIn(() =>
        restoreSpawn(
          tree,
          pid,
          status![1],
          opts.sibling
            ? {
              seizeOptions: live.some((t) => hasSeccomp(t.core))
                ? SEIZE_TREE_OPTIONS | PTRACE_O_SUSPEND_SECCOMP
                : SEIZE_TREE_OPTIONS,
              beforeGo: (p) => {
                cgroups.firstStop(p);
                fillNamespaces(p);
              },
            }
            : undefined,
          {
            cloneFlags: ns.cloneFlags,
            setTid: setTidOf(levelsOf(tasks[0].core)),
            groups: ns.rootGroups(tasks[0].core.creds?.groups ?? []),
          },
        )
      );
    } catch (err) {
      if (err instanceof NativeError && err.errno === 17) {
        throw new RestoreError(`pid ${pid} is taken; stop that process or restore elsewhere`);
      }
      if (err instanceof NativeError && err.errno === 1) {
        throw new RestoreError(
          `cannot create pid ${pid}: clone3 with set_tid needs CAP_CHECKPOINT_RESTORE or root`,
        );
      }
      throw err;
    }
    started.add(root);
    fdops.close(status[1]);
    status = [status[0], -1];
    const tSpawn = performance.now();
    log.debug(`tree of ${tasks.length} task(s): plan ready after ${formatMs(tSpawn - t0)}`);
    const expect = new Map<number, number>(); // tid -> pid
    for (const t of live) for (const th of t.core.threads) expect.set(th.tid, t.core.pid);
    // Zombies and ghosts exit during the restore.
    const zombies = new Set([
      ...tasks.filter((t) => t.core.zombie).map((t) => t.core.pid),
      ...sessions.ghosts,
    ]);
    const ids = new TaskIds(tasks.map((t) => t.core), ns.freeOuterPids);
    const servers = new LazyServers(() => live.map((t) => ids.realOf(t.core.pid)));
    let tForked = 0;
    const ready = await superviseRestorers(
      root,
      expect,
      zombies,
      started,
      status[0],
      fills,
      lazy,
      servers,
      (p, i) => built.get(p)?.plan.ops[i]?.what,
      {
        seized: opts.sibling,
        forked: () => tForked = performance.now(),
        seccomp: live.some((t) => hasSeccomp(t.core)),
        onRootStop: fillNamespaces,
        onMounted: ns.mounts ? fillMounts : undefined,
        ids,
        firstStop: cgroups.active ? (tid, d) => cgroups.firstStop(tid, d) : undefined,
      },
    );
    const tReady = performance.now();
    log.debug(`restorers done in ${formatMs(tReady - tSpawn)}`);
    notify("post-restore", pid);
    notify("pre-resume");
    opened.beforeRun();
    ns.beforeRun();
    cgroups.beforeRun();
    for (const t of live) finish(t.core, ready.get(t.core.pid)!, ids);
    log.debug(`registers set and released in ${formatMs(performance.now() - tReady)}`);
    const firstInstructionMs = performance.now() - t0;
    log.info(
      `restored ${tasks.length} task(s), root pid ${pid}, running after ${
        formatMs(firstInstructionMs)
      }`,
    );
    started.clear();
    try {
      notify("post-resume");
    } catch (err) {
      log.error((err as Error).message);
    }
    const stats: RestoreStats = {
      pages_compared: 0,
      pages_skipped_cow: 0,
      forking_time: us(tForked ? tForked - tSpawn : 0),
      restore_time: us(firstInstructionMs),
      pages_restored: live.reduce(
        (a, t) => a + (t.pagemap?.runs ?? []).reduce((b, r) => b + Number(r.nrPages), 0),
        0,
      ),
    };
    writeRestoreStats(opts.dir, stats);
    if (servers.size === 0) return { pid, ms: firstInstructionMs, firstInstructionMs, stats };
    // The tree runs on pages that are still arriving: a detached restore
    // must not leave before they all have, or the tree would wait forever.
    if (opts.detach) {
      await servers.done();
      const ms = performance.now() - t0;
      log.info(`every page of the tree is in after ${formatMs(ms)}`);
      return { pid, ms, firstInstructionMs, stats };
    }
    return { pid, ms: firstInstructionMs, firstInstructionMs, stats, loaded: servers.done() };
  } catch (err) {
    for (const p of started) kill(p, 9);
    // Threads (and children) were reported after their leader: collected
    // first, or the leader's exit, reported only after theirs, never comes.
    for (const p of [...started].reverse()) {
      try {
        wait(p, WALL);
      } catch { /* reaped */ }
    }
    cgroups.undo();
    throw err;
  } finally {
    cgroups.close();
    opened.closeAll();
    shmem.closeAll();
    ns.close();
    if (late) { for (const n of late) fdops.close(n); }
    for (const n of parentFds) fdops.close(n);
    if (status) { for (const n of status) if (n >= 0) fdops.close(n); }
  }
}

/** Whether a task runs with ckpt's own uids and gids (no CAP_SETUID or
 * CAP_SETGID needed to give them back). */
function ownIds(core: TaskCore): boolean {
  if (core.zombie || !core.creds) return true;
  const st = Deno.readTextFileSync("/proc/self/status");
  const ids = (k: string) =>
    new RegExp(`^${k}:\\s+(.*)$`, "m").exec(st)?.[1].trim().split(/\s+/).map(Number) ?? [];
  const same = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);
  return same(core.creds.uids, ids("Uid")) && same(core.creds.gids, ids("Gid"));
}

/** Who forks pid, at which moment of its own setup: a helper that made a
 * session leaves it no terminal; one forked by a live task (in its normal
 * stage) hands on that task's. */
function bornOf(plan: SessionPlan, pid: number, tasks: TaskImages[]): Born | undefined {
  for (const [owner, list] of plan.forks) {
    const e = list.find((x) => x.pid === pid && x.kind === "task");
    if (!e) continue;
    const tty = (p: number) => tasks.find((t) => t.core.pid === p)?.core.ttyNr ?? 0;
    if (e.forker < 0) {
      return { from: owner, stage: e.when, fromTtyNr: e.when === "normal" ? tty(owner) : -1 };
    }
    const by = list[e.forker];
    if (by.setsid) return { from: owner, stage: "fresh", fromTtyNr: -1 };
    return { from: owner, stage: "normal", fromTtyNr: tty(owner) };
  }
  return undefined;
}

/** The tree's sessions and groups, as restore makes them (sessions.ts). */
function planTreeSessions(cores: TaskCore[], shellJob: boolean): SessionPlan {
  const taken = new Set(cores.map((c) => c.pid));
  let next = Number(Deno.readTextFileSync("/proc/sys/kernel/pid_max").trim()) - 1;
  const freePid = () => {
    while (taken.has(next) || processExists(next)) next--;
    taken.add(next);
    return next;
  };
  try {
    return planSessions(sessionTasks(cores), { shellJob, freePid });
  } catch (err) {
    if (err instanceof SessionError) throw new RestoreError(err.message);
    throw err;
  }
}

function refuseTaken(pid: number): void {
  // A dumped-and-killed task may linger as a zombie until its parent (often
  // init, which reaps lazily) collects it: give that a moment.
  for (let i = 0; i < 500 && processExists(pid) && isZombie(pid); i++) sleepSync(10);
  if (!processExists(pid)) return;
  let who = "";
  try {
    who = ` by ${readStat(pid).comm}`;
  } catch { /* gone meanwhile */ }
  throw new RestoreError(`pid ${pid} is taken${who}; stop that process or restore elsewhere`);
}

function isZombie(pid: number): boolean {
  try {
    return readStat(pid).state === "Z";
  } catch {
    return false;
  }
}

export { basePlan } from "./task_plan.ts";
