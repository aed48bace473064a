// Typed wrappers for the native integrity and safety helpers: CRC32C at
// memory speed (ffi/crc32c.zig), page copy with checksums, flock, and
// symlink-proof opens (ffi/fdops.zig). Kept apart from mod.ts so these
// concerns stay in one place.
import { crc32c } from "../images/crc32c.ts";
import { native } from "./load.ts";
import { cstr, NativeError } from "./mod.ts";

function check(rc: bigint, op: string, what?: string): number {
  if (rc < 0n) throw new NativeError(op, Number(-rc), what);
  return Number(rc);
}

/** Copies [addr, len] pairs into the pages file at fileOff on a worker thread
 * (several run in parallel) and returns one CRC32C per pair. */
export async function dumpPagesCrc(
  pid: number,
  memFd: number,
  runs: BigUint64Array<ArrayBuffer>,
  outFd: number,
  fileOff: bigint,
): Promise<{ bytes: number; crcs: Uint32Array<ArrayBuffer> }> {
  const crcs = new Uint32Array(runs.length / 2);
  const rc = await native().ck_dump_pages_crc(
    pid,
    memFd,
    new Uint8Array(runs.buffer),
    BigInt(runs.length / 2),
    outFd,
    fileOff,
    new Uint8Array(crcs.buffer),
  );
  return { bytes: check(rc, "copying memory", `of pid ${pid}`), crcs };
}

/** CRC32C of a buffer, continuing `seed` (a finalized CRC). */
export function crc32cNative(data: Uint8Array<ArrayBuffer>, seed = 0): number {
  return native().ck_crc32c(seed >>> 0, data, BigInt(data.length)) >>> 0;
}

/** CRC32C of data: natively (SSE4.2) when it is large, in JavaScript when
 * a call would cost more than the sum (an image's header, a small core). */
export function crc32cOf(data: Uint8Array): number {
  if (data.length < 16 << 10) return crc32c(data);
  const own = data.buffer instanceof ArrayBuffer ? data as Uint8Array<ArrayBuffer> : data.slice();
  return crc32cNative(own);
}

/** CRC32C of each [offset, length] range of fd (offsets page aligned, ranges
 * inside the file), computed off the JS thread. */
export async function crc32cRanges(
  fd: number,
  ranges: BigUint64Array<ArrayBuffer>,
): Promise<Uint32Array<ArrayBuffer>> {
  const out = new Uint32Array(ranges.length / 2);
  const rc = await native().ck_crc32c_ranges(
    fd,
    new Uint8Array(ranges.buffer),
    BigInt(ranges.length / 2),
    new Uint8Array(out.buffer),
  );
  check(rc, "checksumming pages", `fd ${fd}`);
  return out;
}

export const LOCK_SH = 1, LOCK_EX = 2, LOCK_NB = 4, LOCK_UN = 8;

/** flock(2); false when LOCK_NB found the lock held elsewhere. */
export function flock(fd: number, op: number): boolean {
  const rc = native().ck_flock(fd, op);
  if (rc === -11n) return false; // EWOULDBLOCK
  check(rc, "flock", `fd ${fd}`);
  return true;
}

export const RESOLVE_NO_XDEV = 1, RESOLVE_NO_MAGICLINKS = 2, RESOLVE_NO_SYMLINKS = 4;
export const AT_FDCWD = -100, AT_REMOVEDIR = 0x200;

export function openat2(
  dirfd: number,
  path: string,
  flags: number,
  mode: number,
  resolve: number,
): number {
  return check(
    native().ck_openat2(dirfd, cstr(path), BigInt(flags), BigInt(mode), BigInt(resolve)),
    "open",
    path,
  );
}

export function unlinkat(dirfd: number, name: string, flags = 0): void {
  check(native().ck_unlinkat(dirfd, cstr(name), flags), "unlink", name);
}
