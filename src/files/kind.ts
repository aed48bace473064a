// The one shape every kind of open file has in ckpt: a module that knows how
// to recognise it at dump, what to record of it, how to check the record at
// restore, and how to open it again — and, when a task must do something
// itself once its fds are in place (register epoll targets, take a POSIX
// lock), which operations it must run. Kinds are listed in registry.ts; the
// drivers are collect.ts (dump) and open.ts (restore). Modules hold no state
// of their own: what one dump or restore needs is kept with `ctx.local`.
import type { FileEntry, FileKind, TaskCore } from "../gen/ckpt/images_pb.ts";
import type { PlanOp } from "../restore/plan_buffer.ts";
import type { Authority, CheckPolicy, Expect } from "./authority.ts";

/** One descriptor of a frozen task (or of ckpt itself, for one that was in
 * flight in a socket queue), as /proc shows it. */
export interface DumpedFd {
  /** The task holding it; Deno.pid for a descriptor ckpt received. */
  pid: number;
  fd: number;
  /** readlink of /proc/PID/fd/N: a path, "pipe:[INO]", "anon_inode:[eventfd]"… */
  link: string;
  /** Open file status flags (O_ACCMODE, O_APPEND, O_NONBLOCK…), without O_CLOEXEC. */
  flags: number;
  pos: bigint;
  /** fdinfo "key: value" lines, first occurrence of each key. */
  info: Map<string, string>;
  /** The whole fdinfo text, for kinds with one line per item (epoll tfd, inotify wd). */
  infoText: string;
  /** infoText as read, undecoded, when the reader has it. */
  infoBytes?(): Uint8Array;
  /** Whether infoText has `lock:` lines, when the reader already knows
   * (ten thousand fds need not be decoded to learn they hold none). */
  lockLines?: boolean;
  /** stat of /proc/PID/fd/N (the open file itself). */
  st: Deno.FileInfo;
  /** "fd N of pid P (link)", for messages. */
  where: string;
}

/** The kind-specific part of a FileEntry (the collector gives the id). */
export type FileBody = Omit<Partial<FileEntry>, "id" | "$typeName"> & { kind: FileKind };

/** --tcp-established, --tcp-close, --skip-in-flight. */
export interface NetDumpOptions {
  tcpEstablished: boolean;
  tcpClose: boolean;
  skipInFlight: boolean;
}

/** How a dump lets the tree go: killed (then "killed" once it is), left
 * running or stopped, or released because the dump failed. */
export type LetGo = "kill" | "killed" | "run" | "stop" | "fail";

export interface DumpContext {
  readonly shellJob: boolean;
  /** CLOCK_MONOTONIC when the tree was frozen, in ns (0: not known). */
  readonly frozenAtNs: bigint;
  /** Options the UNIX socket kind reads (--ext-unix-sk, --external). */
  readonly unix: { extUnixSk: string[]; external: string[] };
  /** Options the inet socket kinds read. */
  readonly net: NetDumpOptions;
  /** Every live task of the tree (a kind that must act on all of a tree's
   * files at once, such as locking its connections, finds them there). */
  readonly pids: readonly number[];
  /** The file id of fd n of pid, describing it first if it is new. */
  fileOf(pid: number, n: number): number;
  /** The file id of a descriptor ckpt itself holds (received in flight). */
  ownFile(n: number): number;
  /** A new entry no fd refers to directly (an object several entries or
   * mappings share, e.g. the inode behind memfds); its id. */
  addEntry(body: FileBody): number;
  /** A copy of fd n of pid in ckpt (pidfd_getfd; for ckpt's own, a dup),
   * to inspect from outside; the caller closes it. */
  copyFd(pid: number, n: number, where: string): number;
  /** State kept for one dump, made on first use. */
  local<T>(owner: object, make: () => T): T;
  /** Runs once every task's fds are known (e.g. where sockets' peers are). */
  atFinish(fn: (pids: number[]) => void): void;
  /** Runs when the dump ends, done or failed (close what was held for it). */
  atRelease(fn: () => void): void;
  /** Runs just before the tree is let go (and, when it is killed, once more
   * after: "killed"); also on failure ("fail"). */
  atLetGo(fn: (how: LetGo) => void): void;
}

export type FileValidation = "filesize" | "none";

export interface RestoreContext {
  readonly validation: FileValidation;
  /** What files are checked against (--file-validation, same machine). */
  readonly policy: CheckPolicy;
  readonly shellJob: boolean;
  /** --inherit-fd: "pipe:[INO]" / "socket:[INO]" / path → ckpt's own fd. */
  readonly inherit: Map<string, number>;
  /** --ext-unix-sk values and --ext-unix-sk-missing. */
  readonly unix: { extUnixSk: string[]; missing: "fail" | "disconnect" };
  /** --tcp-established, --tcp-close on restore. */
  readonly net: { tcpEstablished: boolean; tcpClose: boolean };
  /** Every entry of files.img, by id. */
  readonly entries: Map<number, FileEntry>;
  /** The task on whose behalf the file is being opened (its first holder). */
  readonly task: TaskCore | undefined;
  /** That task's authority: what every path operation for it is done with. */
  readonly authority: Authority;
  /** A task of the tree by pid (e.g. a socket's holder). */
  taskOf(pid: number): TaskCore | undefined;
  /** ckpt's fd for file `id`, opened on first use (one per entry), for
   * `task` when it is the first to need it (a file in flight in a queue:
   * the task holding the socket). */
  get(id: number, where: string, task?: TaskCore): number;
  /** Keeps fd open until the tree runs, then closes it. */
  keep(fd: number): number;
  /** State kept for one restore, made on first use. */
  local<T>(owner: object, make: () => T): T;
  /** Runs when the restore ends (after the tree runs, or after a failure). */
  atClose(fn: () => void): void;
  /** Runs once every task has done its restore (its memory mapped) and
   * waits at its last stop, just before the tree runs: to drop events the
   * restore itself caused, to add a seal that would have refused a mapping
   * the tasks still had to make. Throws RestoreError to fail the restore. */
  beforeRun(fn: () => void): void;
  /** Opens a path the task had open, with O_CLOEXEC added, with the task's
   * authority and without following any symlink; what is found must be
   * what `expect` says the dump saw (type; identity on the same machine;
   * size as --file-validation says). Throws one line naming path and why. */
  openPath(path: string, flags: number, where: string, expect?: Expect): number;
  /** Opens what the operator hands the tree (the restoring terminal of a
   * --shell-job restore, like an --inherit-fd): with ckpt's own authority,
   * still without following a symlink. */
  openOperators(path: string, flags: number, where: string): number;
}

/** Where a task holds one file: the task, every fd number it has it at, and
 * whether this is the first task of the tree (in plan order) to hold it. */
export interface Holding {
  task: TaskCore;
  fds: number[];
  first: boolean;
}

/** What taskOps may ask for: a service fd (ckpt's fd moved into the task
 * above its own, closed by the restorer) for a file it needs at hand. */
export interface TaskOpsContext {
  readonly restore: RestoreContext;
  /** The number a file will have in the task while the ops run, as a
   * service fd (ckpt's fd for file `id`, passed on). */
  serviceFd(id: number, where: string): number;
  /** The task's fd number for file `id`, if its fd table has it. */
  fdOf(id: number): number | undefined;
  /** The file the task's fd n will be (its fd table), if any. */
  fileAt(n: number): number | undefined;
}

export interface FileKindOps {
  /** For messages: "epoll", "timerfd", "unix socket"… */
  readonly name: string;
  /** The FileKind values this module restores. */
  readonly kinds: readonly FileKind[];
  /** Dump: whether fd is of this kind (the first module that claims it dumps it). */
  claims(fd: DumpedFd, ctx: DumpContext): boolean;
  /** Dump: what restore needs. Throws DumpError to refuse (the tree runs on).
   * `id` is the entry's id, known before the body (a socket queue may hold
   * the socket itself). */
  dump(fd: DumpedFd, ctx: DumpContext, id: number): FileBody;
  /** Dump: a task's whole fd table, before any fd of it is claimed, so that
   * a kind can read what it needs of all its fds at once (one native call
   * for ten thousand sockets, not ten thousand calls). */
  prefetch?(fds: readonly DumpedFd[], ctx: DumpContext): void;
  /** Restore, before anything is opened: the entry is well formed; `fail`
   * throws an ImageError naming files.img. */
  validate(f: FileEntry, fail: (why: string) => never): void;
  /** Restore: a new descriptor in ckpt for the file (the task inherits it). */
  open(f: FileEntry, ctx: RestoreContext, where: string): number;
  /** Restore: whether the file can only be opened once the restored root's
   * namespaces exist (it belongs to one of them). Its `open` then runs at
   * the root's first stop, inside the root's IPC, UTS, cgroup and network
   * namespaces; until then a placeholder holds its place, and the root puts
   * the real descriptor there before it forks anything. */
  deferred?(f: FileEntry): boolean;
  /** A socket: it belongs to the network namespace it is made in, so when
   * the restored tree's is not ckpt's, every file of such a kind is opened
   * inside it at the root's first stop (as `deferred` ones are), in the
   * order restore first asked for them. */
  network?: boolean;
  /** The name --inherit-fd gives this file, if it can be inherited. */
  inheritKey?(f: FileEntry): string | undefined;
  /** Restore: what a task must do itself once its fds are at their numbers
   * (called once per task holding the file). An UNSWAP_FD names its
   * SWAP_FD by its index in the list returned here. */
  taskOps?(f: FileEntry, holding: Holding, ctx: TaskOpsContext): PlanOp[];
}

/** `ctx.local` for both drivers: one value per owner, made on first use. */
export function localOf<T>(locals: Map<object, unknown>, owner: object, make: () => T): T {
  if (!locals.has(owner)) locals.set(owner, make());
  return locals.get(owner) as T;
}
