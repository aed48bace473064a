// Typed wrappers for the *at path operations of ffi/fdops.zig: stat of an
// fd, and changes made relative to a directory fd or on an O_PATH fd, so a
// path is looked up once (safely) and never again.
import { native } from "./load.ts";
import { cstr, fd as fdops, NativeError } from "./mod.ts";

export const AT_SYMLINK_NOFOLLOW = 0x100, AT_EACCESS = 0x200, AT_EMPTY_PATH = 0x1000;
export const S_IFMT = 0o170000;
export const S_IF = {
  SOCK: 0o140000,
  LNK: 0o120000,
  REG: 0o100000,
  BLK: 0o060000,
  DIR: 0o040000,
  CHR: 0o020000,
  FIFO: 0o010000,
} as const;
export const X_OK = 1, W_OK = 2, R_OK = 4;

export interface Stat {
  dev: bigint;
  ino: bigint;
  nlink: bigint;
  /** Type and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  rdev: bigint;
  size: bigint;
  mtimeNs: bigint;
}

function check(rc: bigint, op: string, what: string): number {
  if (rc < 0n) throw new NativeError(op, Number(-rc), what);
  return Number(rc);
}

function decode(b: Uint8Array<ArrayBuffer>): Stat {
  const v = new DataView(b.buffer);
  const u64 = (o: number) => v.getBigUint64(o, true);
  return {
    dev: u64(0),
    ino: u64(8),
    nlink: u64(16),
    mode: v.getUint32(24, true),
    uid: v.getUint32(28, true),
    gid: v.getUint32(32, true),
    rdev: u64(40),
    size: v.getBigInt64(48, true),
    mtimeNs: v.getBigInt64(88, true) * 1_000_000_000n + v.getBigInt64(96, true),
  };
}

export function fstat(fd: number, what = `fd ${fd}`): Stat {
  const b = new Uint8Array(144);
  check(native().ck_fstat(fd, b), "fstat", what);
  return decode(b);
}

const STATX_BTIME = 0x800;

/** When fd's file was created (ms since the epoch), where the filesystem
 * keeps it: with the inode number it tells a file from a newer one that
 * got the same (freed) number. */
export function birthMs(fd: number): number | undefined {
  const b = new Uint8Array(256);
  if (native().ck_statx(fd, cstr(""), AT_EMPTY_PATH, STATX_BTIME, b) < 0n) return undefined;
  const v = new DataView(b.buffer);
  if (!(v.getUint32(0, true) & STATX_BTIME)) return undefined;
  return Number(v.getBigInt64(80, true)) * 1000 + Math.floor(v.getUint32(88, true) / 1e6);
}

/** birthMs of what `path` leads to (e.g. /proc/PID/fd/N); 0 when unknown. */
export function birthMsAt(path: string): number {
  const b = new Uint8Array(256);
  if (native().ck_statx(-100, cstr(path), 0, STATX_BTIME, b) < 0n) return 0;
  const v = new DataView(b.buffer);
  if (!(v.getUint32(0, true) & STATX_BTIME)) return 0;
  return Number(v.getBigInt64(80, true)) * 1000 + Math.floor(v.getUint32(88, true) / 1e6);
}

/** fstatat; null when nothing is there (ENOENT). */
export function fstatat(dirfd: number, name: string, flags = AT_SYMLINK_NOFOLLOW): Stat | null {
  const b = new Uint8Array(144);
  const rc = native().ck_fstatat(dirfd, cstr(name), b, flags);
  if (rc === -2n) return null;
  check(rc, "stat", name);
  return decode(b);
}

export function fchownat(dirfd: number, name: string, uid: number, gid: number, flags: number) {
  check(native().ck_fchownat(dirfd, cstr(name), uid >>> 0, gid >>> 0, flags), "chown", name);
}

export function fchmod(fd: number, mode: number): void {
  check(native().ck_fchmod(fd, mode), "chmod", `fd ${fd}`);
}

export function fchmodat2(dirfd: number, name: string, mode: number, flags: number): void {
  check(native().ck_fchmodat2(dirfd, cstr(name), mode, flags), "chmod", name);
}

/** Whether the calling thread may access (R_OK/W_OK/X_OK) what name names. */
export function accessible(dirfd: number, name: string, mode: number, flags: number): boolean {
  return native().ck_faccessat2(dirfd, cstr(name), mode, flags | AT_EACCESS) === 0n;
}

export function readlinkat(dirfd: number, name: string): string {
  const b = new Uint8Array(4097);
  const n = check(native().ck_readlinkat(dirfd, cstr(name), b, BigInt(b.length)), "readlink", name);
  return new TextDecoder().decode(b.subarray(0, n));
}

export function typeName(mode: number): string {
  switch (mode & S_IFMT) {
    case S_IF.REG:
      return "a regular file";
    case S_IF.DIR:
      return "a directory";
    case S_IF.CHR:
      return "a character device";
    case S_IF.BLK:
      return "a block device";
    case S_IF.FIFO:
      return "a FIFO";
    case S_IF.SOCK:
      return "a socket";
    case S_IF.LNK:
      return "a symlink";
    default:
      return "an unknown kind of file";
  }
}

const SEEK_DATA = 3, SEEK_HOLE = 4, ENXIO = 6;

/** The [start, end) ranges of fd's file within [from, to) that hold data
 * (SEEK_DATA/SEEK_HOLE: pages never written, or punched out, are holes),
 * found one at a time, so a caller may stop early. */
export function* dataExtents(
  fd: number,
  from: bigint,
  to: bigint,
): Generator<[bigint, bigint]> {
  for (let at = from; at < to;) {
    let start: bigint;
    try {
      start = fdops.lseek(fd, at, SEEK_DATA);
    } catch (err) {
      if (err instanceof NativeError && err.errno === ENXIO) return; // only a hole is left
      throw err;
    }
    if (start >= to) return;
    const hole = fdops.lseek(fd, start, SEEK_HOLE);
    const end = hole < to ? hole : to;
    if (end <= start) return;
    yield [start, end];
    at = end;
  }
}
