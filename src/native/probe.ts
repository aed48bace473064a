// Typed wrappers over ffi/probe.zig, the native half of `ckpt check`.
import { native } from "./load.ts";
import { NativeError } from "./mod.ts";

/** The probe found the kernel's answer malformed or not what it asked for. */
export const EBADMSG = 74;

function check(rc: bigint, op: string, what?: string): number {
  if (rc < 0n) throw new NativeError(op, Number(-rc), what);
  return Number(rc);
}

/** Forks a child with exactly `pid` (clone3 + set_tid), which exits at once
 * and is reaped; returns the pid the kernel gave it. EEXIST: pid taken. */
export function probeClone3SetTid(pid: number): number {
  return check(native().ck_probe_clone3_set_tid(pid), "clone3", `with set_tid ${pid}`);
}

export interface UffdApi {
  features: bigint;
  ioctls: bigint;
}

/** userfaultfd(UFFD_USER_MODE_ONLY) + UFFDIO_API: what this kernel supports. */
export function probeUserfaultfd(): UffdApi {
  const f = new BigUint64Array(1), i = new BigUint64Array(1);
  check(
    native().ck_probe_userfaultfd(new Uint8Array(f.buffer), new Uint8Array(i.buffer)),
    "userfaultfd",
  );
  return { features: f[0], ioctls: i[0] };
}

/** PAGEMAP_SCAN over a known pattern of present pages; returns regions found. */
export function probePagemapScan(): number {
  return check(native().ck_probe_pagemap_scan(), "ioctl(PAGEMAP_SCAN)", "on /proc/self/pagemap");
}

/** A sock_diag UNIX_DIAG dump of the whole namespace, checked for shape;
 * `seen` says whether socket inode `ino` was in it with its name. */
export function probeUnixDiag(ino: number): { sockets: number; named: number; seen: boolean } {
  const out = new Uint32Array(2);
  const n = check(
    native().ck_probe_unix_diag(ino, new Uint8Array(out.buffer)),
    "sock_diag",
    "UNIX_DIAG dump",
  );
  return { sockets: n, named: out[0], seen: out[1] === 1 };
}
