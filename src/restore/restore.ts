// ckpt restore: read and check every image, open everything the tree needs,
// build one plan per task, fork the root with its PID (each task forks its
// children), let the restorers rebuild them, set the final registers over
// ptrace once every thread of every task is ready, and let them go. Any
// failure kills what was started; the images are never modified.
import type { FdTable, FileEntry, MmImage, PagemapImage, TaskCore } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { ImageDir } from "../images/dir.ts";
import { checkPagesHeader } from "../images/format.ts";
import {
  decodeWait,
  fd as fdops,
  kill,
  lazyServe,
  NativeError,
  O,
  planLayout,
  ptrace,
  PTRACE_O_EXITKILL,
  regionSize,
  restoreSpawn,
  wait,
  WALL,
  WNOHANG,
} from "../native/mod.ts";
import { errnoText } from "../native/errno.ts";
import { processExists } from "../proc/read.ts";
import { readLimits, readStat } from "../proc/status.ts";
import { log } from "../util/log.ts";
import { formatMs, hex } from "../util/units.ts";
import { type FileValidation, OpenedFiles } from "./files.ts";
import { EXTERNAL_FILL_MIN, fillBytes, fillTask } from "./fill.ts";
import { planMemory, regionHints, SharedObjects, TASK_SIZE } from "./memory.ts";
import {
  encodePlan,
  encodeTree,
  type FdMove,
  FLAG_EXTERNAL_FILL,
  FLAG_JOIN_PGID,
  FLAG_LAZY,
  FLAG_ROOT,
  FLAG_SETPGID,
  FLAG_SETSID,
  FLAG_SHARED_FILES,
  LAYOUT,
  type PageFill,
  type Plan,
  type PlanChild,
} from "./plan_buffer.ts";

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
}

export interface Restored {
  pid: number;
  ms: number;
  /** Until the tree was let go: what a lazy restore makes short. */
  firstInstructionMs: number;
  /** Lazy restore without detach: settles once every page is in; rejects
   * (the tree already killed) when a page could not be served. */
  loaded?: Promise<void>;
}

const STAGES = [
  "none",
  "child setup",
  "session",
  "file descriptors",
  "cwd/root",
  "restorer region",
  "vdso move",
  "unmapping ckpt's memory",
  "mapping memory",
  "reading pages",
  "memory protection",
  "mm fields (prctl PR_SET_MM_MAP)",
  "signal handlers",
  "interval timers",
  "thread state",
  "personality/umask/comm",
  "resource limits",
  "credentials",
  "pending signals",
  "forking children",
  "creating threads",
  "userfaultfd registration",
];
const READY = 0x52454144595f434bn;
const FILL = 0x46494c4c5f5f434bn;
const LAZY = 0x4c415a595f5f434bn;

interface TaskImages {
  core: TaskCore;
  mm?: MmImage;
  pagemap?: PagemapImage;
  fds?: FdTable;
}

export async function restore(opts: RestoreOptions): Promise<Restored> {
  const t0 = performance.now();
  checkLayout();
  const dir = ImageDir.open(opts.dir);
  const inv = dir.readInventory();
  const pid = inv.rootPid;
  if (inv.pids[0] !== pid) {
    throw new RestoreError(`${opts.dir}: the inventory does not start with its root`);
  }
  // Every image is read and checked before anything is forked.
  const tasks = inv.pids.map((p): TaskImages => {
    const core = dir.readCore(p);
    if (core.zombie) return { core };
    return { core, mm: dir.readMm(p), pagemap: dir.readPagemap(p), fds: dir.readFdTable(p) };
  });
  const files = new Map(dir.readFiles().files.map((f) => [f.id, f]));
  const shellJob = !!(opts.shellJob || inv.shellJob);
  if (inv.shellJob && !opts.shellJob) {
    log.info("dumped with --shell-job: restoring into this session");
  }
  for (const t of tasks) refuseTaken(t.core.pid);
  if (tasks[0].core.zombie) {
    throw new RestoreError(`the root pid ${pid} is a zombie: nothing to restore`);
  }

  const opened = new OpenedFiles(files, {
    validation: opts.fileValidation ?? "filesize",
    shellJob,
    inherit: opts.inherit ?? new Map(),
    unix: { extUnixSk: opts.extUnixSk ?? [], missing: opts.extUnixSkMissing ?? "fail" },
  });
  const shmem = SharedObjects.of(tasks.map((t) => t.mm?.vmas ?? []));
  const parentFds: number[] = [];
  const started = new Set<number>();
  let status: [number, number] | undefined;
  try {
    const live = tasks.filter((t) => !t.core.zombie);
    const index = new Map(live.map((t, i) => [t.core.pid, i]));
    const fills = new Map<number, ExternalFill>();
    const lazy = new Map<number, ExternalFill>();
    const built = new Map<number, BuiltPlan>();
    for (const t of live) {
      const children = tasks.filter((c) => c.core.ppid === t.core.pid && c.core.pid !== pid)
        // Group leaders first, so members can join their groups.
        .sort((a, b) => Number(b.core.pgid === b.core.pid) - Number(a.core.pgid === a.core.pid))
        .map((c) => ({
          pid: c.core.pid,
          planIndex: index.get(c.core.pid) ?? 0,
          zombie: c.core.zombie,
          exitStatus: c.core.exitStatus,
          exitSignal: c.core.exitSignal || 17,
          cloneFlags: (c.core.sharesFiles ? CLONE_FILES : 0) | (c.core.sharesFs ? CLONE_FS : 0),
        }));
      const parent = tasks.find((x) => x.core.pid === t.core.ppid)?.core;
      const sharedParent = t.core.sharesFiles ? built.get(t.core.ppid) : undefined;
      if (t.core.sharesFiles && (!sharedParent || children.some((c) => !c.zombie))) {
        throw new RestoreError(
          `pid ${t.core.pid} shares its parent's fd table and has children of its own; this cannot be restored yet`,
        );
      }
      built.set(
        t.core.pid,
        taskPlan(dir, t, files, opened, shmem, parentFds, opts, fills, lazy, {
          root: t.core.pid === pid,
          shellJob,
          parent,
          children,
          sharedParent,
        }),
      );
    }
    const plans = live.map((t) => {
      const b = built.get(t.core.pid)!;
      const len = encodePlan(b.plan).length + 64 * 8 + 8;
      b.plan.hints = regionHints(b.occupied, BigInt(regionSize(len, b.plan.threads.length)));
      return encodePlan(b.plan);
    });
    const tree = encodeTree(plans);

    status = fdops.pipe(O.CLOEXEC | O.NONBLOCK);
    let root: number;
    try {
      root = restoreSpawn(tree, pid, status[1]);
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
    const zombies = new Set(tasks.filter((t) => t.core.zombie).map((t) => t.core.pid));
    const servers = new LazyServers(live.map((t) => t.core.pid));
    const ready = await superviseRestorers(
      root,
      expect,
      zombies,
      started,
      status[0],
      fills,
      lazy,
      servers,
    );
    const tReady = performance.now();
    log.debug(`restorers done in ${formatMs(tReady - tSpawn)}`);
    for (const t of live) finish(t.core, ready.get(t.core.pid)!);
    log.debug(`registers set and released in ${formatMs(performance.now() - tReady)}`);
    const firstInstructionMs = performance.now() - t0;
    log.info(
      `restored ${tasks.length} task(s), root pid ${pid}, running after ${
        formatMs(firstInstructionMs)
      }`,
    );
    started.clear();
    if (servers.size === 0) return { pid, ms: firstInstructionMs, firstInstructionMs };
    // The tree runs on pages that are still arriving: a detached restore
    // must not leave before they all have, or the tree would wait forever.
    if (opts.detach) {
      await servers.done();
      const ms = performance.now() - t0;
      log.info(`every page of the tree is in after ${formatMs(ms)}`);
      return { pid, ms, firstInstructionMs };
    }
    return { pid, ms: firstInstructionMs, firstInstructionMs, loaded: servers.done() };
  } catch (err) {
    for (const p of started) kill(p, 9);
    for (const p of started) {
      try {
        wait(p, WALL);
      } catch { /* reaped */ }
    }
    throw err;
  } finally {
    opened.closeAll();
    shmem.closeAll();
    for (const n of parentFds) fdops.close(n);
    if (status) { for (const n of status) if (n >= 0) fdops.close(n); }
  }
}

function refuseTaken(pid: number): void {
  // A dumped-and-killed task may linger as a zombie until its parent (often
  // init, which reaps lazily) collects it: give that a moment.
  for (let i = 0; i < 500 && processExists(pid) && isZombie(pid); i++) sleepMs(10);
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

interface TreePlace {
  sharedParent?: BuiltPlan;
  root: boolean;
  shellJob: boolean;
  parent?: TaskCore;
  children: PlanChild[];
}

/** One task's plan: fds moved from ckpt's, service fds (pages, cwd, root,
 * exe, mapped files) above them, memory, and everything in its core. */
function taskPlan(
  dir: ImageDir,
  t: TaskImages,
  files: Map<number, FileEntry>,
  opened: OpenedFiles,
  shmem: SharedObjects,
  parentFds: number[],
  opts: RestoreOptions,
  external: Map<number, ExternalFill>,
  lazy: Map<number, ExternalFill>,
  place: TreePlace,
): BuiltPlan {
  const core = t.core;
  const pid = core.pid;
  const shared = place.sharedParent;
  // A task sharing its parent's fd table has the parent's fds; its own
  // service fds are laid out by the parent, above the parent's.
  const moves = shared ? [] : t.fds!.fds.map((e) => ({
    src: opened.get(e.fileId, `fd ${e.fd} of pid ${pid}`),
    dst: e.fd,
    cloexec: e.cloexec,
  }));
  const serviceMoves: FdMove[] = [];
  const serviceLo = shared ? shared.nextFree : Math.max(2, ...moves.map((m) => m.dst)) + 1;
  let nextService = serviceLo;
  const service = (parentFd: number): number => {
    parentFds.push(parentFd);
    serviceMoves.push({ src: parentFd, dst: nextService, cloexec: true });
    return nextService++;
  };
  const pagesPath = dir.file(t.pagemap!.pagesFile);
  const pagesFd = fdops.open(pagesPath, O.RDONLY | O.CLOEXEC);
  parentFds.push(pagesFd);
  const head = new Uint8Array(4096);
  fdops.pread(pagesFd, head, 0);
  checkPagesHeader(pagesPath, head);
  const plan = basePlan(core, place);
  plan.pagesFd = service(fdops.dupAbove(pagesFd, 100));
  plan.cwdFd = service(openDir(files, core.cwdFileId, "cwd"));
  const root = files.get(core.rootFileId)?.reg?.path ?? "/";
  plan.rootFd = root === "/" ? -1 : service(openDir(files, core.rootFileId, "root"));
  const exe = files.get(core.mm?.exeFileId ?? 0)?.reg?.path;
  plan.exeFd = exe ? service(fdops.open(exe, O.RDONLY | O.CLOEXEC)) : -1;
  const mem = planMemory(
    pid,
    t.mm!.vmas,
    t.pagemap!.runs,
    files,
    opts.fileValidation ?? "filesize",
    service,
    shmem,
    opts.lazyPages,
  );
  plan.vmas = mem.vmas;
  plan.fills = mem.fills;
  if (mem.lazyFills.length) {
    plan.flags |= FLAG_LAZY;
    lazy.set(pid, { pagesFd, fills: mem.lazyFills });
  }
  if (fillBytes(mem.fills) >= EXTERNAL_FILL_MIN) {
    plan.flags |= FLAG_EXTERNAL_FILL;
    external.set(pid, { pagesFd, fills: mem.fills });
  }
  plan.specials = mem.specials;
  plan.serviceLo = serviceLo;
  plan.serviceHi = nextService - 1;
  if (shared) {
    plan.flags |= FLAG_SHARED_FILES;
    plan.statusFd = shared.plan.statusFd;
    plan.fds = [];
    shared.plan.fds.push(...serviceMoves);
    shared.nextFree = nextService;
    return { plan, occupied: mem.occupied, nextFree: nextService };
  }
  plan.statusFd = nextService;
  plan.fds = [...moves, ...serviceMoves];
  return { plan, occupied: mem.occupied, nextFree: nextService + 1 };
}

/** A task's plan before encoding: a task sharing its fd table adds its
 * service fds to its parent's, from nextFree on. */
interface BuiltPlan {
  plan: Plan;
  occupied: [bigint, bigint][];
  nextFree: number;
}

function checkLayout(): void {
  const got = planLayout();
  if (got.some((v, i) => v !== LAYOUT[i])) {
    throw new RestoreError(
      `native library plan layout ${got} does not match ${LAYOUT}: rebuild it`,
    );
  }
}

function openDir(files: Map<number, FileEntry>, id: number, what: string): number {
  const path = files.get(id)?.reg?.path;
  if (!path) throw new RestoreError(`the ${what} directory is missing from files.img`);
  try {
    return fdops.open(path, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  } catch (err) {
    throw new RestoreError(`cannot open the ${what} directory ${path}: ${(err as Error).message}`);
  }
}

export function basePlan(core: TaskCore, place: TreePlace): Plan {
  const t = core.threads[0];
  const pid = core.pid;
  let flags = place.root ? FLAG_ROOT : 0;
  let joinPgid = 0;
  // What the task inherits at fork: ckpt's session and group for the root,
  // its parent's (as restored) for the others.
  const inheritedSid = place.root ? -1 : place.parent?.sid;
  const inheritedPgid = place.root ? -1 : place.parent?.pgid;
  if (core.sid === pid) flags |= FLAG_SETSID;
  else if (core.sid !== inheritedSid && !(place.root && place.shellJob)) {
    throw new RestoreError(
      place.root
        ? `pid ${pid} was in session ${core.sid}, which it did not lead; restore with --shell-job`
        : `pid ${pid} was in session ${core.sid}, not its parent's; such sessions cannot be restored yet`,
    );
  }
  if (core.pgid === pid && core.sid !== pid) flags |= FLAG_SETPGID;
  else if (core.pgid !== pid && core.pgid !== inheritedPgid && core.sid !== pid && !place.root) {
    flags |= FLAG_JOIN_PGID;
    joinPgid = core.pgid;
  }
  const ours = new Map(readLimits("self").map((l) => [l.resource, l.max]));
  const rlimits = core.rlimits.map((l) => {
    const cap = ours.get(l.resource) ?? l.max;
    if (l.max <= cap) return { resource: l.resource, cur: l.cur, max: l.max };
    log.warn(
      `pid ${pid}: limit ${l.resource} hard value lowered to ckpt's own (${cap}); raising it needs CAP_SYS_RESOURCE`,
    );
    return { resource: l.resource, cur: l.cur < cap ? l.cur : cap, max: cap };
  });
  const sigactions = Array.from({ length: 64 }, (_, i) => {
    const a = core.sigactions.find((s) => s.signo === i + 1);
    return a
      ? { handler: a.handler, flags: a.flags, restorer: a.restorer, mask: a.mask }
      : { handler: 0n, flags: 0n, restorer: 0n, mask: 0n };
  });
  const c = core.creds!;
  const m = core.mm!;
  return {
    flags,
    pid,
    statusFd: -1,
    pagesFd: -1,
    exeFd: -1,
    cwdFd: -1,
    rootFd: -1,
    serviceLo: 0,
    serviceHi: 0,
    taskSize: TASK_SIZE,
    fds: [],
    vmas: [],
    fills: [],
    specials: [],
    hints: [],
    sigactions,
    signals: [
      ...core.sharedPending.map((s) => ({ tid: 0, signo: s.signo, info: s.siginfo })),
      ...core.threads.flatMap((th) =>
        th.pending.map((s) => ({ tid: th.tid, signo: s.signo, info: s.siginfo }))
      ),
    ],
    groups: c.groups,
    auxv: m.auxv,
    rlimits,
    altstack: { sp: t.altstackSp, size: t.altstackSize, flags: t.altstackFlags },
    personality: core.personality,
    umask: core.umask,
    pdeathsig: core.pdeathsig,
    tidAddress: t.tidAddress,
    robust: { head: t.robustHead, len: t.robustLen },
    rseq: { addr: t.rseqAddr, len: t.rseqLen, sig: t.rseqSig },
    itimers: [0, 1, 2].map((w) => {
      const it = core.itimers.find((x) => x.which === w);
      return {
        intervalSec: it?.intervalSec ?? 0n,
        intervalUsec: it?.intervalUsec ?? 0n,
        valueSec: it?.valueSec ?? 0n,
        valueUsec: it?.valueUsec ?? 0n,
      };
    }),
    mm: m,
    comm: t.comm || core.comm,
    uids: c.uids,
    gids: c.gids,
    caps: { eff: c.capEff, prm: c.capPrm, inh: c.capInh, bnd: c.capBnd },
    dumpable: c.dumpable ? 1 : 0,
    children: place.children,
    threads: core.threads.slice(1).map((th) => ({
      tid: th.tid,
      altstack: { sp: th.altstackSp, size: th.altstackSize, flags: th.altstackFlags },
      tidAddress: th.tidAddress,
      robust: { head: th.robustHead, len: th.robustLen },
      rseq: { addr: th.rseqAddr, len: th.rseqLen, sig: th.rseqSig },
      comm: th.comm,
    })),
    joinPgid,
  };
}

const CLONE_FS = 0x200, CLONE_FILES = 0x400;
const PTRACE_O_TRACEFORK = 2n, PTRACE_O_TRACEVFORK = 4n, PTRACE_O_TRACECLONE = 8n;
const SIGTRAP = 5, SIGSTOP = 19;

/** Drives the whole tree through its restore: lets fork/clone events and the
 * new tasks' first stops pass, and collects every thread's final int3 stop.
 * Returns, per task, the restorer region its main thread reported. A task
 * that dies or stops for anything else fails the restore. */
interface ExternalFill {
  pagesFd: number;
  fills: PageFill[];
}

async function superviseRestorers(
  root: number,
  expect: Map<number, number>,
  zombies: Set<number>,
  started: Set<number>,
  statusFd: number,
  external: Map<number, ExternalFill>,
  lazy: Map<number, ExternalFill>,
  servers: LazyServers,
): Promise<Map<number, { start: bigint; len: bigint }>> {
  let filling = 0;
  let fillError: unknown;
  const regions = new Map<number, { start: bigint; len: bigint }>();
  const ready = new Set<number>();
  const zombiesSeen = new Set<number>();
  const deadline = performance.now() + 60_000;
  let rootStopped = false;
  while (ready.size < expect.size || zombiesSeen.size < zombies.size) {
    if (fillError) throw fillError;
    servers.throwIfFailed();
    const st = wait(-1, WALL | WNOHANG);
    if (!st) {
      if (performance.now() > deadline) throw new RestoreError(`restore of pid ${root} timed out`);
      // Let fill workers' completions run while waiting.
      if (filling > 0) await new Promise((r) => setTimeout(r, 1));
      else sleepMs(1);
      continue;
    }
    const tid = st.pid;
    started.add(tid);
    if (!st.stopped) {
      if (zombies.has(tid)) {
        zombiesSeen.add(tid);
        started.delete(tid);
        continue;
      }
      throw new RestoreError(failureText(tid, st.raw, statusFd));
    }
    if (tid === root && !rootStopped && st.stopSig === SIGSTOP) {
      rootStopped = true;
      ptrace.setOptions(
        root,
        PTRACE_O_EXITKILL | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE,
      );
      ptrace.cont(root, 0);
      continue;
    }
    if (st.stopSig === SIGTRAP && st.event >= 1 && st.event <= 3) {
      ptrace.cont(tid, 0); // a fork/vfork/clone event of the parent
      continue;
    }
    if (st.stopSig === SIGSTOP && !ready.has(tid)) {
      ptrace.cont(tid, 0); // first stop of an auto-attached task or thread
      continue;
    }
    const regs = new BigUint64Array(ptrace.getRegs(tid).buffer);
    const ext = external.get(tid);
    if (st.stopSig === SIGTRAP && st.event === 0 && regs[10] === FILL && ext) {
      filling++;
      fillTask(tid, ext.pagesFd, ext.fills).then(
        () => ptrace.cont(tid, 0),
        (err) => fillError = err,
      ).finally(() => filling--);
      continue;
    }
    const lz = lazy.get(tid);
    if (st.stopSig === SIGTRAP && st.event === 0 && regs[10] === LAZY && lz) {
      servers.start(tid, Number(regs[14]), lz);
      ptrace.cont(tid, 0);
      continue;
    }
    if (st.stopSig === SIGTRAP && st.event === 0 && regs[10] === READY) {
      if (!expect.has(tid)) {
        throw new RestoreError(`an unexpected task ${tid} appeared during restore`);
      }
      ready.add(tid);
      if (expect.get(tid) === tid) regions.set(tid, { start: regs[14], len: regs[13] });
      continue;
    }
    const who = expect.has(tid) ? `pid ${expect.get(tid)} (thread ${tid})` : `task ${tid}`;
    throw new RestoreError(
      `restorer of ${who} stopped with signal ${st.stopSig} at ${hex(regs[16])}`,
    );
  }
  return regions;
}

/** One page server per lazily restored task, each on a worker thread from
 * the restorer's userfaultfd stop on (the restorer itself may fault on its
 * memory before it is done). A server that fails kills the whole tree before
 * its userfaultfd is closed: closing it would hand the waiting threads zero
 * pages instead of theirs. */
class LazyServers {
  private readonly running: Promise<void>[] = [];
  private failure: Error | undefined;

  constructor(private readonly tree: number[]) {}

  get size(): number {
    return this.running.length;
  }

  start(pid: number, taskFd: number, what: ExternalFill): void {
    const pidfd = fdops.pidfdOpen(pid);
    let uffd: number;
    try {
      uffd = fdops.pidfdGetfd(pidfd, taskFd, `userfaultfd of pid ${pid}`);
    } finally {
      fdops.close(pidfd);
    }
    // Its own copy of the pages file: the restore closes its fds when it
    // returns, while this goes on.
    const pagesFd = fdops.dupAbove(what.pagesFd, 100);
    const triples = new BigUint64Array(what.fills.length * 3);
    let end = 0n;
    what.fills.forEach((f, i) => {
      triples.set([f.addr, f.len, f.fileOff], i * 3);
      if (f.fileOff + f.len > end) end = f.fileOff + f.len;
    });
    const t0 = performance.now();
    this.running.push(
      lazyServe(uffd, pagesFd, triples, end).then(
        (st) => {
          log.debug(
            `pid ${pid}: pages served in ${formatMs(performance.now() - t0)}: ${st.faults} ` +
              `fault(s), ${st.faultBytes} bytes on faults, ${st.backgroundBytes} in the ` +
              `background, ${st.zeroPages} zero page(s)${st.gone ? " (the task went away)" : ""}`,
          );
        },
        (err) => {
          for (const p of this.tree) kill(p, 9);
          // EFAULT is the source side: the pages file shrank or its
          // storage failed after it was checked.
          const why = err instanceof NativeError && err.errno === 14
            ? `pages-${pid}.img can no longer be read (truncated or an I/O error)`
            : (err as Error).message;
          this.failure ??= new RestoreError(
            `lazy restore of pid ${pid} failed, the tree was killed: ${why}`,
          );
        },
      ).finally(() => {
        fdops.close(uffd);
        fdops.close(pagesFd);
      }),
    );
  }

  throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  async done(): Promise<void> {
    await Promise.all(this.running);
    this.throwIfFailed();
  }
}

function failureText(tid: number, raw: number, statusFd: number): string {
  const rec = new Uint8Array(24);
  let n = 0;
  try {
    n = fdops.read(statusFd, rec);
  } catch { /* nothing written */ }
  if (n === 24) {
    const dv = new DataView(rec.buffer);
    const stage = STAGES[dv.getUint32(0, true)] ?? `stage ${dv.getUint32(0, true)}`;
    const errno = dv.getInt32(4, true);
    const detail = dv.getBigUint64(8, true);
    const pid = dv.getInt32(16, true);
    return `restoring pid ${pid} failed at ${stage} (detail ${hex(detail)}): ${errnoText(errno)}`;
  }
  const st = decodeWait(tid, raw);
  return st.signaled
    ? `restorer of task ${tid} was killed by signal ${st.termSig}`
    : `restorer of task ${tid} exited with status ${st.exitCode}`;
}

/** Dumped registers and FPU state for every thread, the restorer region
 * unmapped, the signal masks, and off it goes. A call interrupted at dump is
 * restarted by the kernel's own logic as each thread leaves this stop. */
function finish(core: TaskCore, region: { start: bigint; len: bigint }): void {
  const pid = core.pid;
  for (const th of core.threads) ptrace.setRegs(th.tid, new Uint8Array(th.regs));
  const r = ptrace.injectSyscall(pid, 11, [region.start, region.len]);
  if (r !== 0n) {
    throw new RestoreError(`unmapping the restorer of pid ${pid} failed: ${errnoText(Number(-r))}`);
  }
  for (const th of core.threads) {
    ptrace.setXstate(th.tid, new Uint8Array(th.xsave));
    ptrace.setSigmask(th.tid, th.sigmask);
  }
  for (const th of core.threads) ptrace.detach(th.tid, 0);
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
function sleepMs(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}
