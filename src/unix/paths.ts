// UNIX socket names in the filesystem, handled with the holding task's
// authority and without a path a user could swap. A socket's name is the
// very string it was bound to (getsockname, peers and sender addresses show
// it), so bind(2) must be given that string, and the kernel looks it up
// again; what ckpt controls is everything around it:
//  - the name's directory is opened first, as the task, with no symlink
//    followed but those the dump saw (recorded as the directory they led
//    to), and must still be that directory;
//  - a stale socket file there is removed only if it is a socket nobody
//    listens on, and only as the task (unlinkat in that directory: the
//    kernel applies the task's write permission and the sticky-bit rules);
//  - bind runs as the task, and afterwards the socket file must be in that
//    directory (its inode is the one sock_diag gives for the socket), or the
//    restore is refused;
//  - owner and mode are set on an O_PATH fd of that very inode, as the task,
//    and that fd is kept: ckpt reaches the socket through it (connects and
//    queued messages from the tree's other sockets), never by its path;
//  - connect and sendto to a name outside the tree go through
//    /proc/self/fd/DIR/NAME (the opened directory), as the task, after
//    checking that a socket is there.
// A name no longer leading to its socket at dump (unlinked, replaced by
// another socket's file, or in a directory deleted since) is not bound
// here at all but in a private place (files/private_place.ts).
import { openAt, treeRealPath } from "../mount/view.ts";
import { RestoreError } from "../errors.ts";
import { asTask, type Authority } from "../native/creds.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import {
  openat2,
  RESOLVE_NO_MAGICLINKS,
  RESOLVE_NO_SYMLINKS,
  unlinkat,
} from "../native/integrity.ts";
import {
  AT_EMPTY_PATH,
  fchmodat2,
  fchownat,
  fstat,
  fstatat,
  S_IF,
  S_IFMT,
  typeName,
} from "../native/fsops.ts";
import { showName, SOCK, type SockIds, unixsk } from "../native/unixsk.ts";
import { readUnixSocket } from "./diag.ts";
import { UDIAG_SHOW } from "../native/sockdiag.ts";
import { whyFailed } from "../files/authority.ts";

const ECONNREFUSED = 111, EPROTOTYPE = 91, ENOENT = 2;
const RESOLVE_BENEATH = 8;
const SUN_PATH_MAX = 107;

/** The directory of a socket path, opened as the task and checked. */
export class NameDir {
  private constructor(
    readonly fd: number,
    /** The name's last component. */
    readonly base: string,
    /** The whole name, as bound. */
    readonly path: string,
  ) {}

  /** Opens the directory of `path` as `a`: without symlinks, unless the
   * dump saw some (`resolved`: where they led), in which case the path must
   * lead there still. Call inside asTask. */
  static open(a: Authority, path: string, resolved: string, what: string): NameDir {
    if (!path.startsWith("/")) {
      throw new RestoreError(
        `${what}: cannot restore the relative socket name ${path} (bound relative to its ` +
          `cwd); only absolute names are supported`,
      );
    }
    const slash = path.lastIndexOf("/");
    const dir = path.slice(0, slash) || "/";
    const base = path.slice(slash + 1);
    const real = resolved || dir;
    const fail = (why: string): never => {
      throw new RestoreError(`${what}: ${path}: ${why}`);
    };
    let dfd = -1;
    try {
      dfd = openAt(real, O.PATH | O.DIRECTORY | O.CLOEXEC, RESOLVE_NO_SYMLINKS);
    } catch (err) {
      fail(`cannot open its directory ${real}: ${whyFailed(err, a)}`);
    }
    if (real !== dir) {
      // The symlinks the dump saw on the way may be followed, but the path
      // must still lead where they led then.
      let via = -1;
      try {
        via = openAt(dir, O.PATH | O.DIRECTORY | O.CLOEXEC, RESOLVE_NO_MAGICLINKS);
        const x = fstat(via), y = fstat(dfd);
        if (x.dev !== y.dev || x.ino !== y.ino) {
          fdops.close(dfd);
          fail(
            `its directory ${dir} does not lead to ${real} any more, as it did at dump ` +
              `(a symlink on the way was changed); refusing to follow it`,
          );
        }
      } catch (err) {
        if (err instanceof RestoreError) throw err;
        fdops.close(dfd);
        fail(`cannot open its directory ${dir}: ${whyFailed(err, a)}`);
      } finally {
        if (via >= 0) fdops.close(via);
      }
    }
    return new NameDir(dfd, base, path);
  }

  close(): void {
    fdops.close(this.fd);
  }

  /** An address that reaches the name through the opened directory (the
   * lookup cannot be sent elsewhere but by its last component), or the
   * name itself when that would not fit in sun_path. */
  viaFd(): Uint8Array {
    const via = `/proc/self/fd/${this.fd}/${this.base}`;
    return new TextEncoder().encode(via.length <= SUN_PATH_MAX ? via : this.path);
  }

  stat() {
    return fstatat(this.fd, this.base);
  }
}

/** What a path-named socket needs to be bound as at restore (a name still
 * leading to it at dump; one unlinked since is bound in a private place). */
export interface BindName {
  path: string;
  resolved: string;
  /** Give the socket file this owner and mode. */
  owner: { uid: number; gid: number; mode: number };
}

/** Binds socket fd `n` to a path name as task `a` (see the top of this
 * file); returns an O_PATH fd of its socket file, through which ckpt
 * connects and sends to it (addressOf). */
export function bindAs(a: Authority, n: number, b: BindName, what: string): number {
  return asTask(a, () => {
    const d = NameDir.open(a, b.path, b.resolved, what);
    try {
      freeStale(a, d, what);
      try {
        unixsk.bind(n, new TextEncoder().encode(b.path));
      } catch (err) {
        throw new RestoreError(`${what}: cannot bind ${b.path}: ${whyFailed(err, a)}`);
      }
      const ino = boundInode(n);
      const st = d.stat();
      if (!st || (st.mode & S_IFMT) !== S_IF.SOCK || (ino !== undefined && st.ino !== ino)) {
        throw new RestoreError(
          `${what}: ${b.path}: the socket file is not there right after bind (replaced, ` +
            `or bound elsewhere through a path that changed meanwhile); refusing it`,
        );
      }
      return giveOwnerAndMode(a, d, st.ino, b.owner, what);
    } finally {
      d.close();
    }
  });
}

/** The address that reaches the socket whose file O_PATH fd h is: the
 * lookup ends at that very inode (a magic link), whatever its path is now. */
export function addressOf(h: number): Uint8Array {
  return new TextEncoder().encode(`/proc/self/fd/${h}`);
}

/** The inode of the socket file fd n is bound to (sock_diag), if known. */
function boundInode(n: number): bigint | undefined {
  const sock = readUnixSocket(Number(fstat(n).ino), UDIAG_SHOW.VFS);
  return sock?.vfs ? BigInt(sock.vfs.ino) : undefined;
}

/** Returns the O_PATH fd it set them through (the caller's to close). */
function giveOwnerAndMode(
  a: Authority,
  d: NameDir,
  ino: bigint,
  owner: { uid: number; gid: number; mode: number },
  what: string,
): number {
  const p = openat2(
    d.fd,
    d.base,
    O.PATH | O.NOFOLLOW | O.CLOEXEC,
    0,
    RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH,
  );
  try {
    const st = fstat(p);
    if (st.ino !== ino) {
      throw new RestoreError(`${what}: ${d.path} was replaced right after it was bound`);
    }
    if (st.uid !== owner.uid || st.gid !== owner.gid) {
      try {
        fchownat(p, "", owner.uid, owner.gid, AT_EMPTY_PATH);
      } catch (err) {
        throw new RestoreError(
          `${what}: cannot give ${d.path} its owner uid ${owner.uid} gid ${owner.gid}: ` +
            `${a.who} could not have (${(err as Error).message})`,
        );
      }
    }
    try {
      fchmodat2(p, "", owner.mode & 0o7777, AT_EMPTY_PATH);
    } catch (err) {
      throw new RestoreError(
        `${what}: cannot give ${d.path} its mode 0${owner.mode.toString(8)}: ` +
          `${(err as Error).message}`,
      );
    }
    return p;
  } catch (err) {
    fdops.close(p);
    throw err;
  }
}

/** A socket file left behind by the dumped task (which was killed) keeps
 * its path taken: it is removed when it is a socket nobody listens on, and
 * only as the task. */
function freeStale(a: Authority, d: NameDir, what: string): void {
  const st = d.stat();
  if (!st) return;
  if ((st.mode & S_IFMT) !== S_IF.SOCK) {
    throw new RestoreError(
      `${what}: cannot bind ${d.path}: it exists and is ${typeName(st.mode)}, not a socket`,
    );
  }
  const addr = d.viaFd();
  for (const type of [SOCK.STREAM, SOCK.DGRAM, SOCK.SEQPACKET]) {
    const t = unixsk.socket(type);
    const errno = unixsk.tryConnect(t, addr);
    fdops.close(t);
    if (errno === EPROTOTYPE) continue; // bound there with another type
    if (errno === ECONNREFUSED) break; // nobody there
    if (errno === ENOENT) return; // gone meanwhile
    throw new RestoreError(
      errno === 0
        ? `${what}: cannot bind ${d.path}: a live socket is bound there; stop its owner first`
        : `${what}: cannot bind ${d.path}: cannot tell whether a live socket is bound there ` +
          `(${whyFailed(new NativeError("connect", errno), a)})`,
    );
  }
  try {
    unlinkat(d.fd, d.base);
  } catch (err) {
    if (err instanceof NativeError && err.errno === ENOENT) return;
    throw new RestoreError(
      `${what}: cannot remove the stale socket file ${d.path}: ${a.who} could not have ` +
        `(${(err as Error).message})`,
    );
  }
}

/** connect(2) of fd n to a path name as task `a`, through the checked
 * directory: 0 or the errno (ENOENT/ECONNREFUSED when nobody is there). */
export function connectAs(
  a: Authority,
  n: number,
  name: Uint8Array,
  resolved: string,
  what: string,
): number {
  // As the task's effective ids: the server sees them (SO_PEERCRED).
  const ids = socketIds(a);
  if (name.length === 0 || name[0] === 0) return unixsk.tryConnect(n, name, ids);
  const path = showName(name);
  return asTask(a, () => {
    const d = NameDir.open(a, path, resolved, what);
    try {
      const st = d.stat();
      if (!st) return ENOENT;
      if ((st.mode & S_IFMT) !== S_IF.SOCK) return ECONNREFUSED;
      return unixsk.tryConnect(n, d.viaFd(), ids);
    } finally {
      d.close();
    }
  });
}

/** The ids a socket made for task `a` is connected, paired or made to
 * listen with, so its peer sees the task (SO_PEERCRED) and never root in
 * its place; undefined for a root task (ckpt's own ids already). */
export function socketIds(a: Authority): SockIds | undefined {
  const euid = a.euid ?? a.fsuid, egid = a.egid ?? a.fsgid;
  return euid === 0 && egid === 0 ? undefined : { euid, egid };
}

/** Where the directory of a socket path led at dump when symlinks were on
 * the way (e.g. /run for /var/run/x.sock); "" when none were (restore then
 * follows none). */
export function resolvedDir(path: string): string {
  if (!path.startsWith("/")) return "";
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  try {
    const real = treeRealPath(dir);
    return real === dir ? "" : real;
  } catch {
    return "";
  }
}
