// Restore acts for each task with that task's own authority: every path it
// opens for a task is looked up with the task's credentials (asTask), with
// no symlink followed (the dump's paths come from the kernel — /proc/PID/fd,
// cwd, exe, maps — which has none in them, so a symlink there now can only
// be a trick), and the object found is checked to be what the dump recorded
// before anything is done with it: first opened O_PATH (no side effects, no
// access needed but search), checked with fstat, and only then reopened
// through /proc/self/fd with the access the task had, still as the task.
import type { TaskCore } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { asTask, type Authority } from "../native/creds.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import { resolveAt, restoreRootFd } from "../mount/view.ts";
import { openat2, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS } from "../native/integrity.ts";
import {
  accessible,
  AT_EMPTY_PATH,
  birthMs,
  fstat,
  S_IF,
  S_IFMT,
  type Stat,
  typeName,
  X_OK,
} from "../native/fsops.ts";
import type { FileValidation } from "./kind.ts";

export type { Authority };

const EACCES = 13, ENOENT = 2, ELOOP = 40, EPERM = 1, ENOTDIR = 20, EXDEV = 18;

/** The authority a restored task acts with: its fsuid/fsgid (uids[3],
 * gids[3]), its supplementary groups, its effective capabilities. */
export function authorityOf(core: TaskCore): Authority {
  const c = core.creds;
  const fsuid = c?.uids[3] ?? c?.uids[1] ?? 0;
  return {
    fsuid,
    fsgid: c?.gids[3] ?? c?.gids[1] ?? 0,
    euid: c?.uids[1] ?? fsuid,
    egid: c?.gids[1] ?? c?.gids[3] ?? 0,
    groups: c?.groups ?? [],
    capEff: c?.capEff ?? 0n,
    who: `pid ${core.pid} (uid ${fsuid})`,
  };
}

/** ckpt's own authority (the operator's), for what the operator hands over. */
export function ckptAuthority(): Authority {
  const st = Deno.readTextFileSync("/proc/thread-self/status");
  const ints = (k: string) =>
    (new RegExp(`^${k}:\\s*(.*)$`, "m").exec(st)?.[1] ?? "").trim().split(/\s+/).filter(Boolean)
      .map(Number);
  const cap = /^CapEff:\s*([0-9a-f]+)$/m.exec(st)?.[1] ?? "0";
  return {
    fsuid: ints("Uid")[3] ?? 0,
    fsgid: ints("Gid")[3] ?? 0,
    groups: ints("Groups"),
    capEff: BigInt(`0x${cap}`),
    who: "ckpt",
  };
}

/** What the dump saw at a path; what restore checks the object it finds
 * against. Identity (dev, ino) only counts on the machine (and boot) the dump
 * was made on; size and mtime as --file-validation says. */
export interface Expect {
  /** S_IF.REG, S_IF.DIR, S_IF.FIFO, S_IF.CHR… */
  type: number;
  dev?: bigint;
  ino?: bigint;
  /** Creation time (ms): tells the file from a newer one with its number. */
  btimeMs?: number;
  /** Regular files: the size at dump; growth is accepted when `grows`. */
  size?: bigint;
  grows?: boolean;
  /** Checked too (mapped files: old memory must not meet new contents). */
  mtimeNs?: bigint;
  rdev?: bigint;
}

export interface CheckPolicy {
  validation: FileValidation;
  /** The restore runs where the dump was made (same boot id): inode numbers
   * mean the same objects. */
  sameMachine: boolean;
}

const RESOLVE = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

/** Why a lookup or open failed, for one line. */
export function whyFailed(err: unknown, a: Authority): string {
  if (!(err instanceof NativeError)) return (err as Error).message;
  switch (err.errno) {
    case ELOOP:
      return "a symlink is on its path now (the dump saw none there); refusing to follow it";
    case EXDEV:
      return "its path crosses into another mount or a magic link now; refusing to follow it";
    case EACCES:
    case EPERM:
      return `${a.who} may not open it (permission denied), so restore will not either`;
    case ENOTDIR:
      return "a part of its path is no directory now";
    default:
      return err.message;
  }
}

/** Compares what was found (st, and fd to ask for more) with what the dump
 * saw; the reason it differs, or undefined. */
export function mismatch(
  st: Stat,
  e: Expect,
  policy: CheckPolicy,
  fd?: number,
): string | undefined {
  if ((st.mode & S_IFMT) !== e.type) {
    return `it is ${typeName(st.mode)} now; it was ${typeName(e.type)} at dump`;
  }
  if (e.rdev !== undefined && st.rdev !== e.rdev) {
    return `it is device ${devName(st.rdev)} now; it was ${devName(e.rdev)} at dump`;
  }
  if (policy.validation === "none") return undefined;
  // Below a restored tree's new root, a filesystem the restore made anew
  // (proc, sysfs, tmpfs with its content…) has new inodes and times.
  const remade = restoreRootFd() !== undefined && e.dev !== undefined && st.dev !== e.dev;
  if (!remade && policy.sameMachine && e.ino !== undefined && e.dev !== undefined) {
    const born = e.btimeMs && fd !== undefined ? birthMs(fd) : undefined;
    const reborn = born !== undefined && Math.abs(born - e.btimeMs!) >= 1;
    if (st.ino !== e.ino || st.dev !== e.dev || reborn) {
      return "it is not the file the dump saw (another inode: it was replaced since); " +
        "restore with --file-validation=none to accept it";
    }
  }
  if (e.type === S_IF.REG && e.size !== undefined) {
    const same = st.size === e.size || (e.grows === true && st.size > e.size);
    if (!same) {
      return `it changed since the dump (size ${st.size}, was ${e.size}); ` +
        `restore with --file-validation=none to accept it`;
    }
  }
  // Dumps record mtime to the millisecond (through a double): equal within 1 ms.
  if (!remade && e.mtimeNs !== undefined && Math.abs(Number(st.mtimeNs - e.mtimeNs)) >= 1e6) {
    return "it changed since the dump (its mtime differs); restoring would mix old memory " +
      "with new file contents; restore with --file-validation=none to accept it";
  }
  return undefined;
}

function devName(rdev: bigint): string {
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return `${major}:${minor}`;
}

/** Looks `path` up as the task, without following any symlink, and checks
 * what is there against `expect`: an O_PATH fd (the caller closes it).
 * Throws one line naming the path and why. Runs inside asTask. */
function lookup(
  a: Authority,
  path: string,
  where: string,
  expect: Expect | undefined,
  policy: CheckPolicy,
  flags = 0,
): number {
  let p: number;
  try {
    // O_NOFOLLOW: a symlink as the last component is the object itself
    // (an inotify watch on a link), returned as an O_PATH fd of the link.
    const keep = flags & (O.NOFOLLOW | O.DIRECTORY);
    // Below the restored tree's own root when it has a mount namespace.
    const at = resolveAt(path, RESOLVE);
    p = openat2(at.dirfd, at.path, O.PATH | O.CLOEXEC | keep, 0, at.resolve);
  } catch (err) {
    if (err instanceof NativeError && err.errno === ENOENT) {
      throw new RestoreError(`${where}: ${path} is missing (it existed at dump)`);
    }
    throw new RestoreError(`${where}: cannot open ${path}: ${whyFailed(err, a)}`);
  }
  if (!expect) return p;
  const why = mismatch(fstat(p, path), expect, policy, p);
  if (why) {
    fdops.close(p);
    throw new RestoreError(`${where}: ${path}: ${why}`);
  }
  return p;
}

/** Opens `path` for task `a` with `flags` (O_CLOEXEC added): looked up as
 * the task without symlinks, checked against `expect`, then reopened as the
 * task with the access asked for. */
export function openAs(
  a: Authority,
  path: string,
  flags: number,
  where: string,
  expect: Expect | undefined,
  policy: CheckPolicy,
): number {
  return asTask(a, () => {
    const p = lookup(a, path, where, expect, policy, flags);
    if (flags & O.PATH) return p;
    try {
      return reopen(p, flags, a, path, where);
    } finally {
      fdops.close(p);
    }
  });
}

function reopen(p: number, flags: number, a: Authority, path: string, where: string): number {
  let n: number;
  try {
    // Not O_NOFOLLOW: through /proc/self/fd it would refuse the magic link.
    const f = flags & ~(O.CREAT | O.PATH | O.NOFOLLOW);
    n = fdops.open(`/proc/self/fd/${p}`, f | O.CLOEXEC | O.NOCTTY);
  } catch (err) {
    throw new RestoreError(`${where}: cannot open ${path}: ${whyFailed(err, a)}`);
  }
  const was = fstat(p), now = fstat(n);
  if (was.dev !== now.dev || was.ino !== now.ino) {
    fdops.close(n);
    throw new RestoreError(`${where}: ${path} changed while it was being opened`);
  }
  return n;
}

/** Looks `path` up as the task (no symlinks, checked): an O_PATH fd for
 * what only needs the object (fchdir, a directory to work in). */
export function lookupAs(
  a: Authority,
  path: string,
  where: string,
  expect: Expect | undefined,
  policy: CheckPolicy,
): number {
  return asTask(a, () => lookup(a, path, where, expect, policy));
}

/** Opens a file the kernel itself uses for the task — its executable (for
 * PR_SET_MM_EXE_FILE) or a file it maps: looked up and checked as the task;
 * opened with the task's own access (`write`: read-write) when it has it,
 * or — read-only, when `execOk` and the task may execute the file — by ckpt:
 * execve maps a program the task may run but not read (mode 0711), so the
 * task holds such a mapping legitimately. The fd never reaches the task's
 * own code: the restorer maps it or sets the exe link, then closes it. */
export function openForKernelAs(
  a: Authority,
  path: string,
  write: boolean,
  where: string,
  expect: Expect | undefined,
  policy: CheckPolicy,
  execOk: boolean,
): number {
  const flags = (write ? O.RDWR : O.RDONLY) | O.CLOEXEC;
  let p = -1;
  let mayExec = false;
  const own = asTask(a, () => {
    p = lookup(a, path, where, expect, policy);
    const n = fdops.tryOpen(`/proc/self/fd/${p}`, flags);
    if (n === null && execOk && !write) mayExec = accessible(p, "", X_OK, AT_EMPTY_PATH);
    return n;
  });
  try {
    if (own !== null) return own;
    if (mayExec) return reopen(p, O.RDONLY, a, path, where);
    // Once more as the task, for its own reason in the message.
    return asTask(a, () => reopen(p, flags, a, path, where));
  } finally {
    fdops.close(p);
  }
}

/** The dump's identity of a regular file or directory as an Expect. */
export function expectOf(
  r: { dev: bigint; ino: bigint; size: bigint; mode: number; mtimeNs: bigint; btimeMs: bigint },
  type: number,
): Expect {
  return {
    type,
    dev: r.dev,
    ino: r.ino,
    btimeMs: Number(r.btimeMs) || undefined,
    size: type === S_IF.REG ? r.size : undefined,
  };
}

/** This machine's boot id: images made in this same boot refer to the same
 * inodes (same machine, same filesystems). */
export function bootId(): string {
  try {
    return Deno.readTextFileSync("/proc/sys/kernel/random/boot_id").trim();
  } catch {
    return "";
  }
}
