// Typed wrappers over ffi/rtnl.zig: a netlink socket of the calling thread's
// network namespace, and one request answered in full.
import { check, cstr, ERRNO, NativeError } from "./mod.ts";
import { native } from "./load.ts";

export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;
export const NETLINK_XFRM = 6;

export function nlSocket(protocol: number): number {
  return check(native().ck_nl_socket(protocol), "socket(AF_NETLINK)", `protocol ${protocol}`);
}

// A dump cannot be resumed after a reply did not fit, so the buffer starts
// big enough for any namespace a container has and doubles up to a limit.
const FIRST_SIZE = 256 * 1024;
const MAX_SIZE = 64 * 1024 * 1024;

/** The reply messages to req, up to the DONE or ERROR that ends them. */
export function nlTalk(fd: number, req: Uint8Array<ArrayBuffer>, what: string): Uint8Array {
  for (let size = FIRST_SIZE;; size *= 2) {
    const buf = new Uint8Array(size);
    const rc = native().ck_nl_talk(fd, req, BigInt(req.length), buf, BigInt(size));
    if (rc >= 0n) return buf.subarray(0, Number(rc));
    const errno = Number(-rc);
    if (errno !== ERRNO.ENOSPC || size >= MAX_SIZE) throw new NativeError("netlink", errno, what);
  }
}

/** Every writable setting under root as [relative path, value], read on
 * the calling thread (its network namespace's values). */
export function readSysctlTree(root: string): [string, string][] {
  for (let size = 1 << 18;; size *= 2) {
    const buf = new Uint8Array(size);
    const rc = native().ck_read_sysctls(cstr(root), buf, BigInt(size));
    if (rc < 0n) {
      const errno = Number(-rc);
      if (errno === ERRNO.ENOSPC && size < MAX_SIZE) continue;
      throw new NativeError("reading sysctls", errno, root);
    }
    const parts = new TextDecoder().decode(buf.subarray(0, Number(rc))).split("\0");
    const out: [string, string][] = [];
    for (let i = 0; i + 1 < parts.length; i += 2) out.push([parts[i], parts[i + 1]]);
    return out;
  }
}
