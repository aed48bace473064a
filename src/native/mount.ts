// Typed wrappers over ffi/mount.zig: a detached clone of a mount of another
// mount namespace, and the path calls that save and remake a tmpfs's files
// (relative to a directory fd, never following a symlink at the end).
import { cstr, NativeError } from "./mod.ts";
import { native } from "./load.ts";

function check(rc: bigint, op: string, what: string): number {
  if (rc < 0n) throw new NativeError(op, Number(-rc), what);
  return Number(rc);
}

/** A detached clone (O_CLOEXEC fd) of the mount at `path` in the mount
 * namespace of `nsfd`: it shows that filesystem without what is mounted over
 * parts of it (unless `recursive`). */
export function cloneMountOf(nsfd: number, path: string, recursive = false): number {
  const rc = native().ck_mntns_clone(nsfd, cstr(path), recursive ? 1 : 0);
  if (rc < 0n && -rc > 0xffffn) {
    const step = Number(-rc >> 16n), errno = Number(-rc & 0xffffn);
    const what = ["", "entering the mount namespace", "open_tree", "sending the clone"][step] ??
      "the helper";
    throw new NativeError(what, errno, path);
  }
  return check(rc, "cloning the mount", path);
}

// mkdirat and mknodat: the ones ffi/private.zig exports (one of each).
export { mkdirat, mknodat } from "./private.ts";

export function symlinkat(target: string, dirfd: number, path: string): void {
  check(native().ck_symlinkat(cstr(target), dirfd, cstr(path)), "symlink", path);
}

export function linkat(dirfd: number, old: string, path: string): void {
  check(native().ck_linkat(dirfd, cstr(old), dirfd, cstr(path), 0), "link", path);
}

/** Sets atime and mtime (ns since the epoch); flags AT_SYMLINK_NOFOLLOW,
 * AT_EMPTY_PATH. */
export function utimensat(
  dirfd: number,
  path: string,
  atimeNs: bigint,
  mtimeNs: bigint,
  flags: number,
): void {
  const t = new BigInt64Array([
    atimeNs / 1_000_000_000n,
    atimeNs % 1_000_000_000n,
    mtimeNs / 1_000_000_000n,
    mtimeNs % 1_000_000_000n,
  ]);
  check(
    native().ck_utimensat(dirfd, cstr(path), new Uint8Array(t.buffer), flags),
    "utimensat",
    path,
  );
}

/** The extended attributes of what `path` names (not following a symlink
 * at its end): name → value. */
export function listXattrs(path: string): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const p = cstr(path);
  let names = new Uint8Array(4096);
  let n = native().ck_llistxattr(p, names, BigInt(names.length));
  if (n === -34n) {
    names = new Uint8Array(65536);
    n = native().ck_llistxattr(p, names, BigInt(names.length));
  }
  if (n === -95n || n === -61n) return out; // not supported / none
  const len = check(n, "listxattr", path);
  for (const name of new TextDecoder().decode(names.subarray(0, len)).split("\0")) {
    if (!name) continue;
    let v = new Uint8Array(4096);
    let got = native().ck_lgetxattr(p, cstr(name), v, BigInt(v.length));
    if (got === -34n) {
      v = new Uint8Array(65536);
      got = native().ck_lgetxattr(p, cstr(name), v, BigInt(v.length));
    }
    if (got === -61n) continue; // gone meanwhile
    out.set(name, v.slice(0, check(got, "getxattr", `${path} ${name}`)));
  }
  return out;
}

export function setXattr(path: string, name: string, value: Uint8Array<ArrayBuffer>): void {
  check(
    native().ck_lsetxattr(cstr(path), cstr(name), value, BigInt(value.length), 0),
    "setxattr",
    `${path} ${name}`,
  );
}
