// Typed wrappers for ffi/notify.zig: inotify, fanotify, open_by_handle_at.
import { native } from "./load.ts";
import { check, cstr, NativeError } from "./mod.ts";

export const IN = {
  NONBLOCK: 0o4000,
  CLOEXEC: 0o2000000,
  ALL_EVENTS: 0xfff,
  EXCL_UNLINK: 0x04000000,
  MASK_CREATE: 0x10000000,
  ONESHOT: 0x80000000,
} as const;

export const FAN = {
  CLOEXEC: 0x1,
  NONBLOCK: 0x2,
  MARK_ADD: 0x1,
  MARK_IGNORED_MASK: 0x20,
  MARK_IGNORED_SURV_MODIFY: 0x40,
  MARK_MOUNT: 0x10,
  MARK_FILESYSTEM: 0x100,
  MARK_EVICTABLE: 0x200,
  MARK_IGNORE: 0x400,
  /** Events a listener must answer: FAN_OPEN_PERM, FAN_ACCESS_PERM,
   * FAN_OPEN_EXEC_PERM, FAN_PRE_ACCESS. */
  PERMISSION_EVENTS: 0x00010000 | 0x00020000 | 0x00040000 | 0x00100000,
} as const;

export const inotify = {
  init(flags: number): number {
    return check(native().ck_inotify_init1(flags), "inotify_init1");
  },
  /** The wd, or the errno. */
  addWatch(fd: number, path: string, mask: number): number | NativeError {
    const rc = native().ck_inotify_add_watch(fd, cstr(path), mask >>> 0);
    return rc < 0n ? new NativeError("inotify_add_watch", Number(-rc), path) : Number(rc);
  },
  /** Uses up `count` wds from `first` on, with watches on `spare` removed
   * at once; throws if one of them is not the number expected. */
  burn(fd: number, spare: string, first: number, count: number): void {
    const got = new Int32Array(1);
    const rc = native().ck_inotify_burn(fd, cstr(spare), first, count, new Uint8Array(got.buffer));
    if (rc === -71n) {
      throw new Error(`a throwaway watch got wd ${got[0]}, expected one in ${first}..`);
    }
    check(rc, "inotify_add_watch", spare);
  },
};

export const fanotify = {
  init(flags: number, eventFlags: number): number {
    return check(native().ck_fanotify_init(flags >>> 0, eventFlags >>> 0), "fanotify_init");
  },
  /** fanotify_mark on the object ckpt's fd `on` refers to (an O_PATH fd
   * will do: it is named through /proc/self/fd); null or the errno. */
  markFd(fd: number, flags: number, mask: bigint, on: number): NativeError | null {
    const path = `/proc/self/fd/${on}`;
    const rc = native().ck_fanotify_mark(fd, flags >>> 0, mask, -100, cstr(path));
    return rc < 0n ? new NativeError("fanotify_mark", Number(-rc)) : null;
  },
};

/** open_by_handle_at with a struct file_handle built from its parts; the
 * fd, or the errno. */
export function openByHandle(
  mountFd: number,
  type: number,
  handle: Uint8Array,
  flags: number,
): number | NativeError {
  const b = new Uint8Array(8 + handle.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, handle.length, true);
  v.setInt32(4, type, true);
  b.set(handle, 8);
  const rc = native().ck_open_by_handle_at(mountFd, b, flags);
  return rc < 0n ? new NativeError("open_by_handle_at", Number(-rc)) : Number(rc);
}

/** Bytes waiting to be read on fd (FIONREAD). */
export function queuedBytes(fd: number): number {
  return check(native().ck_fionread(fd), "ioctl(FIONREAD)", `fd ${fd}`);
}

/** One read of whatever is queued; null when nothing is (EAGAIN). */
export function readQueued(fd: number, buf: Uint8Array<ArrayBuffer>): number | null {
  const rc = native().ck_read(fd, buf, BigInt(buf.length));
  if (rc === -11n) return null;
  return check(rc, "read", `fd ${fd}`);
}
