// sock_diag (NETLINK_SOCK_DIAG) for AF_UNIX sockets: the raw netlink reply
// bytes, which src/unix/diag.ts parses.
import { ERRNO, NativeError } from "./mod.ts";
import { native } from "./load.ts";

/** UDIAG_SHOW_* bits of linux/unix_diag.h. */
export const UDIAG_SHOW = {
  NAME: 0x01,
  VFS: 0x02,
  PEER: 0x04,
  ICONS: 0x08,
  RQLEN: 0x10,
  MEMINFO: 0x20,
  UID: 0x40,
} as const;

export const UDIAG_SHOW_ALL = Object.values(UDIAG_SHOW).reduce((a, b) => a | b, 0);

// A dump cannot be resumed after a reply did not fit, so the buffer starts
// big enough for a busy desktop and doubles up to a limit no namespace reaches.
const FIRST_SIZE = 256 * 1024;
const MAX_SIZE = 256 * 1024 * 1024;
/** A connected socket's message with every attribute but a name: ~150 bytes. */
const BYTES_PER_SOCKET = 256;

function query(
  ino: number,
  show: number,
  what: string,
  first = FIRST_SIZE,
): Uint8Array<ArrayBuffer> {
  for (let size = Math.min(MAX_SIZE, Math.max(FIRST_SIZE, first));; size *= 2) {
    const buf = new Uint8Array(size);
    const rc = native().ck_unix_diag(buf, BigInt(size), ino >>> 0, show >>> 0);
    if (rc >= 0n) return buf.slice(0, Number(rc));
    const errno = Number(-rc);
    if (errno !== ERRNO.ENOSPC || size >= MAX_SIZE) {
      throw new NativeError("sock_diag(AF_UNIX)", errno, what);
    }
  }
}

/** Netlink messages describing every UNIX socket of this network namespace;
 * `sockets`: how many there are at least, to size the first try (a dump
 * that does not fit is made again, whole). */
export function unixDiagDump(show: number = UDIAG_SHOW_ALL, sockets = 0): Uint8Array<ArrayBuffer> {
  return query(0, show, "dump", FIRST_SIZE + sockets * BYTES_PER_SOCKET);
}

/** The netlink message for the one UNIX socket with inode `ino`, or null
 * when no such socket exists (any more) in this network namespace. */
export function unixDiagOne(
  ino: number,
  show: number = UDIAG_SHOW_ALL,
): Uint8Array<ArrayBuffer> | null {
  try {
    return query(ino, show, `inode ${ino}`);
  } catch (err) {
    if (err instanceof NativeError && err.errno === ERRNO.ENOENT) return null;
    throw err;
  }
}
