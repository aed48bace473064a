// Typed wrappers over libckpt.so. The only module besides load.ts that calls
// into native code; everything else in ckpt goes through these functions.
// All calls are synchronous: ptrace requests must come from the thread that
// attached, and Deno runs them on the JS thread.
import { errnoText } from "./errno.ts";
import { glibcRseq, native } from "./load.ts";
import { readLimits } from "../proc/status.ts";

export { ERRNO, errnoName, errnoText } from "./errno.ts";

/** A failed system call: what was attempted, on what, and the errno. */
export class NativeError extends Error {
  constructor(readonly op: string, readonly errno: number, readonly what = "") {
    super(`${op}${what ? ` ${what}` : ""}: ${errnoText(errno)}`);
    this.name = "NativeError";
  }
}

export function check(rc: bigint, op: string, what?: string): number {
  if (rc < 0n) throw new NativeError(op, Number(-rc), what);
  return Number(rc);
}

const enc = new TextEncoder();
const F_DUPFD_CLOEXEC = 1030;

/** The highest fd number ckpt's table must hold for `count` more
 * descriptors (within RLIMIT_NOFILE). */
function reserveTop(count: number): number {
  const nofile = Number(readLimits("self").find((l) => l.resource === 7)?.cur ?? 1024n);
  return Math.min(count + 64, nofile - 1);
}
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(enc.encode(s).length + 1);
  enc.encodeInto(s, b);
  return b;
}

// ---- ptrace ----------------------------------------------------------------

export const PTRACE_O_TRACESYSGOOD = 1n;
export const PTRACE_O_EXITKILL = 0x100000n;
/** The tracee's seccomp mode and filters do not apply while ckpt traces it
 * (injected calls, the restorer): needs CAP_SYS_ADMIN and a ckpt not itself
 * under seccomp. */
export const PTRACE_O_SUSPEND_SECCOMP = 0x200000n;
export const PTRACE_EVENT_STOP = 128;
export const WALL = 0x40000000;
export const WNOHANG = 1;

export const ptrace = {
  seize(pid: number, options = 0n): void {
    check(native().ck_ptrace_seize(pid, options), "ptrace(SEIZE)", `pid ${pid}`);
  },
  interrupt(pid: number): void {
    check(native().ck_ptrace_interrupt(pid), "ptrace(INTERRUPT)", `pid ${pid}`);
  },
  detach(pid: number, sig = 0): void {
    check(native().ck_ptrace_detach(pid, sig), "ptrace(DETACH)", `pid ${pid}`);
  },
  cont(pid: number, sig = 0): void {
    check(native().ck_ptrace_cont(pid, sig), "ptrace(CONT)", `pid ${pid}`);
  },
  setOptions(pid: number, options: bigint): void {
    check(native().ck_ptrace_setoptions(pid, options), "ptrace(SETOPTIONS)", `pid ${pid}`);
  },
  getRegs(pid: number): Uint8Array<ArrayBuffer> {
    const buf = new Uint8Array(27 * 8);
    check(native().ck_get_regs(pid, buf), "ptrace(GETREGSET, NT_PRSTATUS)", `pid ${pid}`);
    return buf;
  },
  setRegs(pid: number, regs: Uint8Array<ArrayBuffer>): void {
    check(native().ck_set_regs(pid, regs), "ptrace(SETREGSET, NT_PRSTATUS)", `pid ${pid}`);
  },
  getXstate(pid: number): Uint8Array<ArrayBuffer> {
    const buf = new Uint8Array(64 * 1024);
    const n = check(
      native().ck_get_xstate(pid, buf, BigInt(buf.length)),
      "ptrace(GETREGSET, NT_X86_XSTATE)",
      `pid ${pid}`,
    );
    return buf.slice(0, n);
  },
  setXstate(pid: number, xs: Uint8Array<ArrayBuffer>): void {
    check(
      native().ck_set_xstate(pid, xs, BigInt(xs.length)),
      "ptrace(SETREGSET, NT_X86_XSTATE)",
      `pid ${pid}`,
    );
  },
  getSigmask(pid: number): bigint {
    const b = new BigUint64Array(1);
    check(
      native().ck_get_sigmask(pid, new Uint8Array(b.buffer)),
      "ptrace(GETSIGMASK)",
      `pid ${pid}`,
    );
    return b[0];
  },
  setSigmask(pid: number, mask: bigint): void {
    check(native().ck_set_sigmask(pid, mask), "ptrace(SETSIGMASK)", `pid ${pid}`);
  },
  /** Queued siginfos (128 bytes each) without dequeuing them. */
  peekSiginfo(pid: number, shared: boolean): Uint8Array<ArrayBuffer>[] {
    const max = 1024;
    const buf = new Uint8Array(128 * max);
    const n = check(
      native().ck_peek_siginfo(pid, shared ? 1 : 0, buf, max),
      "ptrace(PEEKSIGINFO)",
      `pid ${pid}`,
    );
    return Array.from({ length: n }, (_, i) => buf.slice(i * 128, (i + 1) * 128));
  },
  getRseq(pid: number): { addr: bigint; len: number; sig: number } {
    const a = new BigUint64Array(1), l = new Uint32Array(1), s = new Uint32Array(1);
    check(
      native().ck_get_rseq(
        pid,
        new Uint8Array(a.buffer),
        new Uint8Array(l.buffer),
        new Uint8Array(s.buffer),
      ),
      "ptrace(GET_RSEQ_CONFIGURATION)",
      `pid ${pid}`,
    );
    return { addr: a[0], len: l[0], sig: s[0] };
  },
  getRobustList(pid: number): { head: bigint; len: bigint } {
    const h = new BigUint64Array(1), l = new BigUint64Array(1);
    check(
      native().ck_get_robust_list(pid, new Uint8Array(h.buffer), new Uint8Array(l.buffer)),
      "get_robust_list",
      `pid ${pid}`,
    );
    return { head: h[0], len: l[0] };
  },
  /** The task forks a frozen copy of itself (see ck_snapshot_fork): its pid
   * in ckpt's PID namespace, and in the task's (for the task to reap it);
   * `keep`: the options it is traced with. */
  snapshotFork(pid: number, keep = 0n): { copy: number; inner: number } {
    const c = new Int32Array(2);
    check(
      native().ck_snapshot_fork(pid, keep, new Uint8Array(c.buffer)),
      "forking a frozen copy",
      `of pid ${pid}`,
    );
    return { copy: c[0], inner: c[1] };
  },
  killTask(pid: number): void {
    native().ck_kill(pid, 9);
  },
  /** The index-th seccomp filter of a stopped tracee (oldest first) as
   * struct sock_filter[] bytes and its flags; null past the last one. */
  seccompFilter(pid: number, index: number): { insns: Uint8Array; flags: bigint } | null {
    const n = native().ck_seccomp_get_filter(pid, BigInt(index), null);
    if (n === -2n) return null; // ENOENT
    const count = check(n, "ptrace(SECCOMP_GET_FILTER)", `pid ${pid}`);
    const insns = new Uint8Array(count * 8);
    check(
      native().ck_seccomp_get_filter(pid, BigInt(index), insns),
      "ptrace(SECCOMP_GET_FILTER)",
      `pid ${pid}`,
    );
    const f = new BigUint64Array(1);
    check(
      native().ck_seccomp_get_metadata(pid, BigInt(index), new Uint8Array(f.buffer)),
      "ptrace(SECCOMP_GET_METADATA)",
      `pid ${pid}`,
    );
    return { insns, flags: f[0] };
  },
  pokeWord(pid: number, addr: bigint, word: bigint): void {
    check(
      native().ck_poke_word(pid, addr, BigInt.asUintN(64, word)),
      "ptrace(POKEDATA)",
      `pid ${pid}`,
    );
  },
  peekWord(pid: number, addr: bigint): bigint {
    const b = new BigUint64Array(1);
    check(
      native().ck_peek_word(pid, addr, new Uint8Array(b.buffer)),
      "ptrace(PEEKDATA)",
      `pid ${pid}`,
    );
    return b[0];
  },
  /** Runs one system call in a stopped tracee; returns its raw result
   * (negative values are -errno from the tracee's point of view). */
  injectSyscall(pid: number, nr: number, args: (bigint | number)[] = []): bigint {
    const a = new BigUint64Array(6);
    args.forEach((v, i) => a[i] = BigInt.asUintN(64, BigInt(v)));
    const r = new BigInt64Array(1);
    check(
      native().ck_inject_syscall(
        pid,
        BigInt(nr),
        new Uint8Array(a.buffer),
        new Uint8Array(r.buffer),
      ),
      `injecting syscall ${nr}`,
      `into pid ${pid}`,
    );
    return r[0];
  },
};

export interface WaitStatus {
  pid: number;
  raw: number;
  exited: boolean;
  exitCode: number;
  signaled: boolean;
  termSig: number;
  stopped: boolean;
  stopSig: number;
  event: number;
}

export function decodeWait(pid: number, raw: number): WaitStatus {
  const low = raw & 0x7f;
  return {
    pid,
    raw,
    exited: low === 0,
    exitCode: (raw >> 8) & 0xff,
    signaled: low !== 0 && low !== 0x7f,
    termSig: low,
    stopped: (raw & 0xff) === 0x7f,
    stopSig: (raw >> 8) & 0xff,
    event: (raw >> 16) & 0xffff,
  };
}

/** wait4(pid); null when WNOHANG found nothing to report. */
export function wait(pid: number, flags = WALL): WaitStatus | null {
  const st = new Int32Array(1);
  const got = check(native().ck_wait(pid, flags, new Uint8Array(st.buffer)), "wait4", `pid ${pid}`);
  if (got === 0) return null;
  return decodeWait(got, st[0]);
}

// ---- descriptors -------------------------------------------------------------

export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  ACCMODE: 3,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  CLOEXEC: 0o2000000,
  PATH: 0o10000000,
  LARGEFILE: 0o100000,
} as const;

export const fd = {
  open(path: string, flags: number, mode = 0o600): number {
    return check(native().ck_open(cstr(path), flags, mode), "open", path);
  },
  tryOpen(path: string, flags: number, mode = 0o600): number | null {
    const rc = native().ck_open(cstr(path), flags, mode);
    return rc < 0n ? null : Number(rc);
  },
  close(n: number): void {
    native().ck_close(n);
  },
  /** Closes every fd of fds, in one call. */
  closeAll(fds: number[]): void {
    if (fds.length < 8) {
      for (const n of fds) native().ck_close(n);
      return;
    }
    const a = new Int32Array(fds);
    native().ck_close_many(new Uint8Array(a.buffer), BigInt(a.length));
  },
  read(n: number, buf: Uint8Array<ArrayBuffer>): number {
    return check(native().ck_read(n, buf, BigInt(buf.length)), "read", `fd ${n}`);
  },
  write(n: number, buf: Uint8Array<ArrayBuffer>): number {
    return check(native().ck_write(n, buf, BigInt(buf.length)), "write", `fd ${n}`);
  },
  writeAll(n: number, buf: Uint8Array<ArrayBuffer>): void {
    let off = 0;
    while (off < buf.length) off += fd.write(n, buf.subarray(off));
  },
  pread(n: number, buf: Uint8Array<ArrayBuffer>, off: number): number {
    return check(native().ck_pread(n, buf, BigInt(buf.length), BigInt(off)), "pread", `fd ${n}`);
  },
  pwriteAll(n: number, buf: Uint8Array<ArrayBuffer>, off: bigint): void {
    let done = 0;
    while (done < buf.length) {
      const part = buf.subarray(done);
      done += check(
        native().ck_pwrite(n, part, BigInt(part.length), off + BigInt(done)),
        "pwrite",
        `fd ${n}`,
      );
    }
  },
  /** fstatfs(2): the filesystem's magic (f_type) and block size. */
  fstatfs(n: number): { type: bigint; bsize: bigint } {
    const out = new BigUint64Array(2);
    check(native().ck_fstatfs(n, new Uint8Array(out.buffer)), "fstatfs", `fd ${n}`);
    return { type: out[0], bsize: out[1] };
  },
  fchmod(n: number, mode: number): void {
    check(native().ck_fchmod(n, mode), "fchmod", `fd ${n}`);
  },
  fchown(n: number, uid: number, gid: number): void {
    check(native().ck_fchown(n, uid, gid), "fchown", `fd ${n}`);
  },
  lseek(n: number, off: bigint, whence: number): bigint {
    const rc = native().ck_lseek(n, off, whence);
    check(rc, "lseek", `fd ${n}`);
    return rc;
  },
  fcntl(n: number, cmd: number, arg = 0): number {
    return check(native().ck_fcntl(n, cmd, BigInt(arg)), "fcntl", `fd ${n}`);
  },
  /** Grows ckpt's fd table at once to hold `count` more descriptors: grown
   * one doubling at a time instead, as descriptors are made, each growth
   * of a multi-threaded process waits for an RCU grace period (ten
   * thousand sockets took four times as long). Best effort. */
  reserve(count: number): void {
    if (count < 256) return;
    const top = reserveTop(count);
    let n = -1;
    try {
      n = fd.open("/dev/null", O.RDONLY | O.CLOEXEC);
      fd.close(fd.dupAbove(n, top));
    } catch {
      /* at the limit already: grown as it goes */
    } finally {
      if (n >= 0) fd.close(n);
    }
  },
  /** reserve() begun on another thread: the main thread goes on (opening
   * descriptors below the table's current size does not wait for it), and
   * reserve() later finds the table grown. The promise settles once the
   * growth is done and its descriptor closed. */
  async reserveSoon(count: number): Promise<void> {
    if (count < 256) return;
    let n = -1;
    try {
      n = fd.open("/dev/null", O.RDONLY | O.CLOEXEC);
      const rc = await native().ck_fcntl_bg(n, F_DUPFD_CLOEXEC, BigInt(reserveTop(count)));
      if (rc >= 0n) fd.close(Number(rc));
    } catch {
      /* best effort, as reserve() */
    } finally {
      if (n >= 0) fd.close(n);
    }
  },
  dupAbove(n: number, min: number): number {
    return check(native().ck_fcntl(n, 0, BigInt(min)), "fcntl(F_DUPFD)", `fd ${n}`);
  },
  pipe(flags = 0): [number, number] {
    const p = new Int32Array(2);
    check(native().ck_pipe(new Uint8Array(p.buffer), flags), "pipe2");
    return [p[0], p[1]];
  },
  tee(fdIn: number, fdOut: number, len: number, flags = 0): number {
    return check(native().ck_tee(fdIn, fdOut, BigInt(len), flags), "tee", `fd ${fdIn}`);
  },
  /** poll(2) of one fd for `events`, not waiting: its revents. */
  poll(n: number, events: number): number {
    return check(native().ck_poll1(n, events), "poll", `fd ${n}`);
  },
  eventfd(count: number, flags: number): number {
    return check(native().ck_eventfd(count, flags), "eventfd2");
  },
  memfd(name: string, flags = 0): number {
    return check(native().ck_memfd_create(cstr(name), flags), "memfd_create", name);
  },
  ftruncate(n: number, len: number): void {
    check(native().ck_ftruncate(n, BigInt(len)), "ftruncate", `fd ${n}`);
  },
  ioctl(n: number, req: number, arg: bigint = 0n): number {
    return check(native().ck_ioctl(n, BigInt(req), arg), "ioctl", `fd ${n}`);
  },
  pidfdOpen(pid: number): number {
    return check(native().ck_pidfd_open(pid, 0), "pidfd_open", `pid ${pid}`);
  },
  /** A copy of fd `target` of the process behind pidfd. */
  pidfdGetfd(pidfd: number, target: number, what = ""): number {
    return check(native().ck_pidfd_getfd(pidfd, target, 0), "pidfd_getfd", what || `fd ${target}`);
  },
};

/** kcmp(2) for whole objects: KCMP_FILES = 2, KCMP_FS = 3, KCMP_VM = 1. */
export function sameObject(pid1: number, pid2: number, kind: number): boolean {
  return check(native().ck_kcmp(pid1, pid2, kind, 0n, 0n), "kcmp", `pids ${pid1} ${pid2}`) === 0;
}

/** True when fd a of pid1 and fd b of pid2 share one open file description. */
export function sameFile(pid1: number, a: number, pid2: number, b: number): boolean {
  return check(native().ck_kcmp(pid1, pid2, 0, BigInt(a), BigInt(b)), "kcmp", `pid ${pid1}`) === 0;
}

export function kill(pid: number, sig: number): boolean {
  return native().ck_kill(pid, sig) >= 0n;
}

// ---- memory ------------------------------------------------------------------

export function vmRead(pid: number, addr: bigint, len: number): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(len);
  const n = check(
    native().ck_vm_read(pid, buf, BigInt(len), addr),
    "process_vm_readv",
    `pid ${pid}`,
  );
  return buf.subarray(0, n);
}

export interface LazyStats {
  faults: number;
  faultBytes: number;
  backgroundBytes: number;
  zeroPages: number;
  /** The task's memory went away before every page was copied. */
  gone: boolean;
  /** Children the task forked meanwhile, served as well. */
  forks: number;
  remaps: number;
  /** Never copied: discarded (MADV_DONTNEED) or unmapped by the program first. */
  droppedBytes: number;
}

/** How a lazy page server ended: errno 0, or the failure with the
 * userfaultfds it left open (to close once the tree is killed) and, for
 * EBADMSG, which fill did not match its CRC32C. */
export interface LazyResult {
  stats: LazyStats;
  errno: number;
  openFds: number[];
  badFill: number;
}

/** A page server at work (see lazyServe). */
export interface LazyServer {
  /** Settles once the server has returned. */
  done: Promise<LazyResult>;
  /** Its failure as soon as it has failed, before it returns: read on the
   * JS thread while waiting on a task that may itself wait for a page. */
  failed(): LazyResult | undefined;
}

/** Serves the userfaultfd `uffd` of a lazily restored task from the pages
 * files until every [addr, len, fileOff, check] quad (sorted by addr; check is
 * the CRC32C | 1 << 32, or 0, with the index into pagesFds of its file in
 * bits 48..63) is copied in, on a worker thread; also the userfaultfds of
 * children the task forks meanwhile. Takes uffd over. */
export function lazyServe(
  uffd: number,
  pagesFds: number[],
  fills: BigUint64Array<ArrayBuffer>,
): LazyServer {
  const st = new BigUint64Array(11);
  const open = new Int32Array(4096);
  const result = (): LazyResult => ({
    stats: {
      faults: Number(st[0]),
      faultBytes: Number(st[1]),
      backgroundBytes: Number(st[2]),
      zeroPages: Number(st[3]),
      gone: st[4] !== 0n,
      forks: Number(st[5]),
      remaps: Number(st[6]),
      droppedBytes: Number(st[7]),
    },
    errno: Number(st[10]),
    badFill: Number(st[8]),
    openFds: [...open.subarray(0, Number(st[9]))],
  });
  const fds = new Int32Array(pagesFds);
  const done = native().ck_lazy_serve(
    uffd,
    new Uint8Array(fds.buffer),
    BigInt(fds.length),
    new Uint8Array(fills.buffer),
    BigInt(fills.length / 4),
    new Uint8Array(st.buffer),
    new Uint8Array(open.buffer),
    BigInt(open.length),
  ).then((rc) => ({ ...result(), errno: rc < 0n ? Number(-rc) : 0 }));
  // The failure field is stored last, after everything result() reads.
  return { done, failed: () => Atomics.load(st, 10) !== 0n ? result() : undefined };
}

/** Copies [addr, len, fileOff] triples from the pages file into task pid on a
 * worker thread (the file mapped from mapOff for mapLen bytes) and returns
 * the CRC32C of each triple's source bytes. */
export async function fillPagesCrc(
  pid: number,
  pagesFd: number,
  fills: BigUint64Array<ArrayBuffer>,
  mapOff: bigint,
  mapLen: bigint,
): Promise<Uint32Array<ArrayBuffer>> {
  const crcs = new Uint32Array(fills.length / 3);
  const rc = await native().ck_fill_pages_crc(
    pid,
    pagesFd,
    new Uint8Array(fills.buffer),
    BigInt(fills.length / 3),
    mapOff,
    mapLen,
    new Uint8Array(crcs.buffer),
  );
  check(rc, "filling the memory", `of pid ${pid}`);
  return crcs;
}

// ---- restore -----------------------------------------------------------------

export function restorerSize(): number {
  return Number(native().ck_restorer_size());
}

export function regionSize(planLen: number, threads: number): number {
  return Number(native().ck_region_size(BigInt(planLen), BigInt(threads)));
}

/** Forks the root of a tree plan with its pid; returns it or throws
 * (EEXIST: taken). The root forks the rest of the tree. With `sibling` the
 * root is a child of ckpt's parent (CLONE_PARENT), seized here with
 * `seizeOptions`, and `ready` runs before it goes on; otherwise it attaches
 * itself (PTRACE_TRACEME) and stops once for ckpt to set its options. */
export function restoreSpawn(
  tree: Uint8Array<ArrayBuffer>,
  pid: number,
  statusFd: number,
  /** beforeGo: called once it is seized, before it runs on. */
  sibling?: { seizeOptions: bigint; beforeGo?: (pid: number) => void },
  /** CLONE_NEW* flags the root is made with, its pid at every PID
   * namespace level, innermost first (empty: pid alone), and the
   * supplementary groups it is forked with (absent: ckpt's). */
  ns: { cloneFlags: number; setTid: number[]; groups?: number[] } = { cloneFlags: 0, setTid: [] },
): number {
  const rseq = glibcRseq();
  const tids = new Int32Array(Math.max(1, ns.setTid.length));
  tids.set(ns.setTid);
  const groups = new Uint32Array(Math.max(1, ns.groups?.length ?? 0));
  groups.set(ns.groups ?? []);
  const nsArgs = [
    BigInt(ns.cloneFlags),
    new Uint8Array(tids.buffer),
    ns.setTid.length,
    new Uint8Array(groups.buffer),
    ns.groups ? ns.groups.length : -1,
  ] as const;
  if (!sibling) {
    return check(
      native().ck_restore_spawn(
        tree,
        BigInt(tree.length),
        statusFd,
        rseq.offset,
        rseq.size,
        ...nsArgs,
      ),
      "clone3",
      `with pid ${pid}`,
    );
  }
  const [rd, wr] = fd.pipe(O.CLOEXEC);
  try {
    const root = check(
      native().ck_restore_spawn_sibling(
        tree,
        BigInt(tree.length),
        statusFd,
        rseq.offset,
        rseq.size,
        rd,
        wr,
        ...nsArgs,
      ),
      "clone3(CLONE_PARENT)",
      `with pid ${pid}`,
    );
    try {
      ptrace.seize(root, sibling.seizeOptions);
      sibling.beforeGo?.(root);
    } catch (err) {
      kill(root, 9);
      throw err;
    }
    fd.writeAll(wr, new Uint8Array([1]));
    return root;
  } finally {
    fd.close(rd);
    fd.close(wr);
  }
}

/** [header size, offsets of fds_off, altstack_sp, itimers, mm, comm, cap_eff,
 * Vma size, offset of children_off, Thread size, offset of ops_off, Op size,
 * Child size, offset of cap_amb, offset of nspids_off] */
export function planLayout(): number[] {
  const b = new BigUint64Array(15);
  native().ck_plan_layout(new Uint8Array(b.buffer));
  return [...b].map(Number);
}
