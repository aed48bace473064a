// Driving a forked tree through its restore: fork/clone events and first
// stops let through, fill and lazy stops served, every thread's final stop
// collected; then the dumped registers set over ptrace and the tree let go.
import { sleepSync } from "../util/sleep.ts";
import type { TaskCore } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import {
  decodeWait,
  fd as fdops,
  kill,
  type LazyResult,
  lazyServe,
  type LazyServer,
  ptrace,
  PTRACE_O_EXITKILL,
  PTRACE_O_SUSPEND_SECCOMP,
  wait,
  WALL,
  WNOHANG,
} from "../native/mod.ts";
import { errnoText } from "../native/errno.ts";
import { log } from "../util/log.ts";
import { formatMs, hex } from "../util/units.ts";
import { listChildren } from "../proc/read.ts";
import { fillTask } from "./fill.ts";
import { TaskIds } from "../ns/ids.ts";
import type { PageFill } from "./plan_buffer.ts";
import { reenterRegs } from "./waits.ts";

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
  "task operations",
];
const READY = 0x52454144595f434bn;
const FILL = 0x46494c4c5f5f434bn;
const LAZY = 0x4c415a595f5f434bn;
const MOUNTS = 0x4d4f554e54535f4bn;

export const CLONE_FS = 0x200, CLONE_FILES = 0x400;
const PTRACE_O_TRACEFORK = 2n, PTRACE_O_TRACEVFORK = 4n, PTRACE_O_TRACECLONE = 8n;
const SIGTRAP = 5, SIGSTOP = 19;
const PTRACE_EVENT_STOP = 128;
export const SEIZE_TREE_OPTIONS = PTRACE_O_EXITKILL | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK |
  PTRACE_O_TRACECLONE;

/** Pages ckpt puts into a task itself (fill workers or a lazy server). */
export interface ExternalFill {
  pagesFd: number;
  pagesPath: string;
  fills: PageFill[];
  /** Fills with src k > 0 come from others[k - 1] (more parts of the
   * task's pages, parent images). */
  others?: PagesSource[];
}

/** A pages file, opened. */
export interface PagesSource {
  fd: number;
  path: string;
}

/** Drives the whole tree through its restore: lets fork/clone events and the
 * new tasks' first stops pass, and collects every thread's final int3 stop.
 * Returns, per task, the restorer region its main thread reported. A task
 * that dies or stops for anything else fails the restore. */

export async function superviseRestorers(
  root: number,
  expect: Map<number, number>,
  zombies: Set<number>,
  started: Set<number>,
  statusFd: number,
  external: Map<number, ExternalFill>,
  lazy: Map<number, ExternalFill>,
  servers: LazyServers,
  /** What op i of pid's plan does, for a failure at that op. */
  opWhat: (pid: number, i: number) => string | undefined = () => undefined,
  more: {
    /** The root was seized with SEIZE_TREE_OPTIONS (a sibling restore): it
     * has no first SIGSTOP, and new tasks start in PTRACE_EVENT_STOP. */
    seized?: boolean;
    /** Called once every task of the tree has been forked. */
    forked?: () => void;
    /** Some task has seccomp state: the restorers must run with it suspended. */
    seccomp?: boolean;
    /** Runs at the root's first stop, before it goes on (its namespaces
     * are filled then; a seized root had them filled before it was let go). */
    onRootStop?: (root: number) => void;
    /** Runs when the root has built its mount tree and waits in it (it
     * has one only when its plan says so). */
    onMounted?: (root: number) => void;
    /** Which dumped tid a task ckpt sees is (they differ in a user
     * namespace of the tree's own). */
    ids?: TaskIds;
    /** At each new task's or thread's first stop, before it runs anything
     * (a seized root's is the caller's, before it lets it go): the tid as
     * ckpt sees it, and as dumped. */
    firstStop?: (tid: number, dumped: number) => void;
  } = {},
): Promise<Map<number, { start: bigint; len: bigint }>> {
  let filling = 0;
  let fillError: unknown;
  const regions = new Map<number, { start: bigint; len: bigint }>();
  const ready = new Set<number>();
  const zombiesSeen = new Set<number>();
  const firstSeen = new Set<number>();
  const deadline = performance.now() + 60_000;
  let rootStopped = !!more.seized;
  const unborn = new Set([...expect.values(), ...zombies]);
  while (ready.size < expect.size || zombiesSeen.size < zombies.size) {
    if (fillError) throw fillError;
    servers.throwIfFailed();
    const st = wait(-1, WALL | WNOHANG);
    if (!st) {
      if (performance.now() > deadline) throw new RestoreError(`restore of pid ${root} timed out`);
      // Let fill workers' completions run while waiting. (A page server's
      // failure is seen without: throwIfFailed reads it from its buffers.)
      if (filling > 0) await new Promise((r) => setTimeout(r, 1));
      else sleepSync(0.2); // a stop reported a millisecond late is that much later to run

      continue;
    }
    // tid: as ckpt sees it (for ptrace); d: as dumped (for the plans).
    const tid = st.pid;
    started.add(tid);
    const d = (more.ids ?? TaskIds.same).dumpedOf(tid);
    if (unborn.delete(d) && unborn.size === 0) more.forked?.();
    if (!st.stopped) {
      if (zombies.has(d)) {
        zombiesSeen.add(d);
        started.delete(tid);
        continue;
      }
      throw new RestoreError(failureText(tid, st.raw, statusFd, opWhat));
    }
    if (tid === root && !rootStopped && st.stopSig === SIGSTOP) {
      rootStopped = true;
      more.firstStop?.(root, d);
      more.onRootStop?.(root);
      traceTree(root, !!more.seccomp);
      ptrace.cont(root, 0);
      continue;
    }
    if (zombies.has(tid)) {
      // A zombie or ghost: its fork events and first stop pass, and the
      // signal a zombie kills itself with is delivered.
      const event = st.stopSig === SIGTRAP && st.event >= 1 && st.event <= 3;
      const first = st.stopSig === SIGSTOP && st.event === 0 && !firstSeen.has(tid);
      if (first) firstSeen.add(tid);
      ptrace.cont(tid, event || first || st.event !== 0 ? 0 : st.stopSig);
      continue;
    }
    if (st.stopSig === SIGTRAP && st.event >= 1 && st.event <= 3) {
      ptrace.cont(tid, 0); // a fork/vfork/clone event of the parent
      continue;
    }
    if ((st.stopSig === SIGSTOP || st.event === PTRACE_EVENT_STOP) && !ready.has(d)) {
      more.firstStop?.(tid, d);
      ptrace.cont(tid, 0); // first stop of an auto-attached task or thread
      continue;
    }
    const regs = new BigUint64Array(ptrace.getRegs(tid).buffer);
    if (st.stopSig === SIGTRAP && st.event === 0 && regs[10] === MOUNTS && tid === root) {
      more.onMounted?.(root);
      ptrace.cont(root, 0);
      continue;
    }
    const ext = external.get(d);
    if (st.stopSig === SIGTRAP && st.event === 0 && regs[10] === FILL && ext) {
      filling++;
      fillTask(tid, ext.pagesFd, ext.fills, ext.pagesPath, ext.others).then(
        () => ptrace.cont(tid, 0),
        (err) => fillError = err,
      ).finally(() => filling--);
      continue;
    }
    const lz = lazy.get(d);
    if (st.stopSig === SIGTRAP && st.event === 0 && regs[10] === LAZY && lz) {
      servers.start(tid, Number(regs[14]), lz);
      ptrace.cont(tid, 0);
      continue;
    }
    if (st.stopSig === SIGTRAP && st.event === 0 && regs[10] === READY) {
      if (!expect.has(d)) {
        throw new RestoreError(`an unexpected task ${tid} appeared during restore`);
      }
      ready.add(d);
      if (expect.get(d) === d) regions.set(d, { start: regs[14], len: regs[13] });
      continue;
    }
    const who = expect.has(d) ? `pid ${expect.get(d)} (thread ${d})` : `task ${tid}`;
    throw new RestoreError(
      `restorer of ${who} stopped with signal ${st.stopSig} at ${hex(regs[16])}`,
    );
  }
  return regions;
}

/** One page server per lazily restored task, each on a worker thread from
 * the restorer's userfaultfd stop on (the restorer itself may fault on its
 * memory before it is done); it also serves the children the task forks
 * meanwhile. A server that fails kills the whole tree, those children
 * included, before its userfaultfds are closed: closing them would hand the
 * waiting threads zero pages instead of theirs. */
export class LazyServers {
  private readonly servers: {
    pid: number;
    what: ExternalFill;
    server: LazyServer;
    over: Promise<void>;
    handled: boolean;
  }[] = [];
  private failure: Error | undefined;

  /** tree: the tasks as ckpt sees them, once they exist. */
  constructor(private readonly tree: () => number[]) {}

  get size(): number {
    return this.servers.length;
  }

  start(pid: number, taskFd: number, what: ExternalFill): void {
    const pidfd = fdops.pidfdOpen(pid);
    let uffd: number;
    try {
      uffd = fdops.pidfdGetfd(pidfd, taskFd, `userfaultfd of pid ${pid}`);
    } finally {
      fdops.close(pidfd);
    }
    // Its own copies of the pages files: the restore closes its fds when it
    // returns, while this goes on.
    const pagesFds = [what.pagesFd, ...(what.others ?? []).map((p) => p.fd)]
      .map((fd) => fd < 0 ? -1 : fdops.dupAbove(fd, 100));
    const quads = new BigUint64Array(what.fills.length * 4);
    what.fills.forEach((f, i) => {
      const check = (f.crc === undefined ? 0n : BigInt(f.crc) | 1n << 32n) |
        BigInt(f.src ?? 0) << 48n;
      quads.set([f.addr, f.len, f.fileOff, check], i * 4);
    });
    const t0 = performance.now();
    const server = lazyServe(uffd, pagesFds, quads);
    const entry = { pid, what, server, over: Promise.resolve(), handled: false };
    entry.over = server.done.then(
      (r) => {
        const st = r.stats;
        if (r.errno !== 0) return this.fail(entry, r);
        log.debug(
          `pid ${pid}: pages served in ${formatMs(performance.now() - t0)}: ${st.faults} ` +
            `fault(s), ${st.faultBytes} bytes on faults, ${st.backgroundBytes} in the ` +
            `background, ${st.zeroPages} zero page(s), ${st.forks} fork(s) followed, ` +
            `${st.remaps} remap(s), ${st.droppedBytes} bytes discarded or unmapped first` +
            `${st.gone ? " (the task went away)" : ""}`,
        );
      },
      (err) => {
        entry.handled = true;
        killTree(this.tree());
        this.failure ??= new RestoreError(
          `lazy restore of pid ${pid} failed, the tree was killed: ${(err as Error).message}`,
        );
      },
    ).finally(() => {
      for (const fd of pagesFds) if (fd >= 0) fdops.close(fd);
    });
    this.servers.push(entry);
  }

  /** Throws the first failure; one not handled yet is handled here, without
   * waiting for its server to return. */
  throwIfFailed(): void {
    for (const s of this.servers) {
      const r = s.handled ? undefined : s.server.failed();
      if (r) this.fail(s, r);
    }
    if (this.failure) throw this.failure;
  }

  async done(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.over));
    this.throwIfFailed();
  }

  private fail(s: { pid: number; what: ExternalFill; handled: boolean }, r: LazyResult): void {
    if (s.handled) return;
    s.handled = true;
    killTree(this.tree());
    for (const fd of r.openFds) fdops.close(fd);
    this.failure ??= new RestoreError(
      `lazy restore of pid ${s.pid} failed, the tree was killed: ${lazyWhy(s.pid, r, s.what)}`,
    );
  }
}

const EFAULT = 14, EBADMSG = 74;

function lazyWhy(pid: number, r: LazyResult, what: ExternalFill): string {
  const f = what.fills[r.badFill];
  const src = f?.src ? what.others?.[f.src - 1]?.path.split("/").pop() : undefined;
  const file = src ?? what.pagesPath.split("/").pop() ?? `pages-${pid}.img`;
  if (r.errno === EBADMSG && f) {
    return `${file}: checksum mismatch in the run at offset ${hex(f.fileOff)} (vaddr ${
      hex(f.addr)
    }, ${f.len / 4096n} pages): the image is damaged`;
  }
  // The pages file shrank or its storage failed after the restore began.
  if (r.errno === EFAULT) return `${file} can no longer be read (truncated or an I/O error)`;
  return `serving pages failed: ${errnoText(r.errno)}`;
}

/** SIGKILL for every task of the tree and every process below one, looked
 * for again until no new one turns up: a child the program forked while its
 * pages were arriving waits on a userfaultfd too. Each one's children are
 * read before and after its kill (a killed task forks no more), so one forked
 * in between is found unless its parent is already gone. */
function killTree(pids: number[]): void {
  const seen = new Set<number>();
  let next = pids;
  while (next.length) {
    const found: number[] = [];
    for (const p of next) {
      if (seen.has(p)) continue;
      seen.add(p);
      found.push(...childrenOf(p));
      kill(p, 9);
      found.push(...childrenOf(p));
    }
    next = found;
  }
}

function childrenOf(pid: number): number[] {
  try {
    return listChildren(pid);
  } catch {
    return []; // gone already
  }
}

function failureText(
  tid: number,
  raw: number,
  statusFd: number,
  opWhat: (pid: number, i: number) => string | undefined,
): string {
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
    const op = STAGES[dv.getUint32(0, true)] === "task operations"
      ? opWhat(pid, Number(detail))
      : undefined;
    if (op) return `restoring pid ${pid} failed at ${op}: ${errnoText(errno)}`;
    return `restoring pid ${pid} failed at ${stage} (detail ${hex(detail)}): ${errnoText(errno)}`;
  }
  const st = decodeWait(tid, raw);
  return st.signaled
    ? `restorer of task ${tid} was killed by signal ${st.termSig}`
    : `restorer of task ${tid} exited with status ${st.exitCode}`;
}

/** Fork/clone tracing for the whole tree, killed if ckpt dies, and seccomp
 * suspended for the restorers: a task's filters are installed before its
 * credentials and must judge none of the restorer's calls, nor the one ckpt
 * injects at the end. */
function traceTree(root: number, seccomp: boolean): void {
  const base = SEIZE_TREE_OPTIONS;
  try {
    ptrace.setOptions(root, base | PTRACE_O_SUSPEND_SECCOMP);
  } catch (err) {
    if (seccomp) {
      throw new RestoreError(
        `the tree has seccomp filters or strict mode, and the kernel would not suspend seccomp ` +
          `for ckpt (PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN and a ckpt not itself under ` +
          `seccomp): ${(err as Error).message}`,
      );
    }
    ptrace.setOptions(root, base);
  }
}

/** Dumped registers and FPU state for every thread, the restorer region
 * unmapped, the signal masks, and off it goes. A call interrupted at dump is
 * restarted by the kernel's own logic as each thread leaves this stop; a
 * wait is entered again with the time it had left (waits.ts). */
export function finish(
  core: TaskCore,
  region: { start: bigint; len: bigint },
  ids: TaskIds = TaskIds.same,
): void {
  const pid = ids.realOf(core.pid);
  const tid = (th: { tid: number }) => ids.realOf(th.tid);
  for (const th of core.threads) {
    const sc = th.syscall;
    // The timespec a reentered wait points to was written by the restorer
    // (waitOps), at the place reenterRegs points it to.
    if (sc?.action === "reenter") {
      ptrace.setRegs(tid(th), reenterRegs(th.regs, sc.nr, sc.remainingNs).regs);
    } else ptrace.setRegs(tid(th), new Uint8Array(th.regs));
  }
  const r = ptrace.injectSyscall(pid, 11, [region.start, region.len]);
  if (r !== 0n) {
    throw new RestoreError(`unmapping the restorer of pid ${pid} failed: ${errnoText(Number(-r))}`);
  }
  for (const th of core.threads) {
    ptrace.setXstate(tid(th), new Uint8Array(th.xsave));
    ptrace.setSigmask(tid(th), th.sigmask);
  }
  for (const th of core.threads) ptrace.detach(tid(th), 0);
}
