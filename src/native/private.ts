// Typed wrappers for ffi/private.zig: a tmpfs mounted nowhere, directories
// and FIFOs made by fd, a bind(2) seen from another root, and pids held for
// a moment (see src/files/private_place.ts, src/unix/sender_pids.ts).
import { native } from "./load.ts";
import { cstr, NativeError } from "./mod.ts";
import { sockaddr } from "./unixsk.ts";

function check(rc: bigint, op: string, what: string): number {
  if (rc < 0n) throw new NativeError(op, Number(-rc), what);
  return Number(rc);
}

/** An fd of the root of a new tmpfs that no mount namespace has mounted. */
export function privateRoot(): number {
  return check(native().ck_private_root(), "mounting", "a private tmpfs");
}

export function mkdirat(dirfd: number, name: string, mode: number): void {
  check(native().ck_mkdirat(dirfd, cstr(name), mode), "mkdir", name);
}

export function mknodat(dirfd: number, name: string, mode: number, dev = 0n): void {
  check(native().ck_mknodat(dirfd, cstr(name), mode, dev), "mknod", name);
}

/** bind(2) of socket fd to `name` (a path), looked up from `root` as the
 * root directory. */
export function bindIn(root: number, fd: number, name: Uint8Array): void {
  const a = sockaddr(name);
  check(native().ck_bind_in(root, fd, a, a.length), "bind", new TextDecoder().decode(name));
}

/** Makes `pid` exist (a zombie child with that pid) until releasePid;
 * false when another process has it. */
export function holdPid(pid: number): boolean {
  const rc = native().ck_pid_hold(pid);
  if (rc === -17n) return false; // EEXIST
  check(rc, "clone3 with set_tid", `pid ${pid}`);
  return true;
}

export function releasePid(pid: number): void {
  check(native().ck_pid_release(pid), "reaping", `pid ${pid}`);
}
