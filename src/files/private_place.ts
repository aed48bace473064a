// A private place to make again what the tree held through a path that is
// gone: a socket bound to a name unlinked (or replaced, or whose directory
// was deleted) since, a FIFO deleted while open. What the program sees of
// such an object is a string — the name bind(2) was given, which
// getsockname, peers and sender addresses show; a deleted FIFO's
// /proc/PID/fd link, its d_path with " (deleted)" — and never the file,
// which no path reaches any more. So it is made in a tmpfs mounted nowhere
// (fsopen + fsmount: no mount namespace has it, no other process can look
// anything up in it), below directories named as the path's, used, and
// unlinked again: nothing appears in anybody's filesystem, so there is no
// race to lose, nothing of the task's to overwrite and no authority to
// borrow. Only ckpt holds it, through the fds it hands back.
import { RestoreError } from "../errors.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import { AT_REMOVEDIR, openat2, RESOLVE_NO_SYMLINKS, unlinkat } from "../native/integrity.ts";
import { bindIn, mkdirat, mknodat, privateRoot } from "../native/private.ts";
import { AT_EMPTY_PATH, fchmodat2, fchownat, S_IF } from "../native/fsops.ts";

const EEXIST = 17;
const PATH_FLAGS = O.PATH | O.NOFOLLOW | O.CLOEXEC;

export class PrivatePlace {
  private root = -1;

  private rootFd(): number {
    if (this.root < 0) this.root = privateRoot();
    return this.root;
  }

  /** Makes the directories `path` passes through below the private root,
   * runs fn in the last one with the name's last component, and removes
   * the directories again ("a/../b" makes a and b: bind looks both up). */
  private within<T>(path: string, what: string, fn: (dir: number, base: string) => T): T {
    const parts = path.split("/").filter((p) => p !== "" && p !== ".");
    const base = parts.pop();
    if (!base || base === "..") throw new RestoreError(`${what}: ${path} names no file`);
    const root = this.rootFd();
    const made: { parent: number; name: string }[] = [];
    const opened: number[] = [];
    const stack = [root];
    try {
      for (const p of parts) {
        const cur = stack[stack.length - 1];
        if (p === "..") {
          if (stack.length > 1) stack.pop();
          continue;
        }
        try {
          mkdirat(cur, p, 0o700);
          made.push({ parent: cur, name: p });
        } catch (err) {
          if (!(err instanceof NativeError && err.errno === EEXIST)) throw err;
        }
        const n = openat2(cur, p, O.PATH | O.DIRECTORY | O.CLOEXEC, 0, RESOLVE_NO_SYMLINKS);
        opened.push(n);
        stack.push(n);
      }
      return fn(stack[stack.length - 1], base);
    } finally {
      for (const m of made.reverse()) unlinkat(m.parent, m.name, AT_REMOVEDIR);
      for (const n of opened) fdops.close(n);
    }
  }

  /** Binds socket fd n to the path name `name` here; returns an O_PATH fd
   * of its socket file, already unlinked: connect(2) and sendto(2) through
   * /proc/self/fd/H reach the socket, and nothing else can. */
  bind(n: number, name: Uint8Array, what: string): number {
    const path = new TextDecoder().decode(name);
    return this.within(path, what, (dir, base) => {
      bindIn(this.rootFd(), n, name);
      const h = openat2(dir, base, PATH_FLAGS, 0, RESOLVE_NO_SYMLINKS);
      unlinkat(dir, base);
      return h;
    });
  }

  /** A new FIFO at `path` here, with its owner and mode, unlinked: an
   * O_PATH fd every end is opened through (/proc/self/fd/H), so that they
   * are one FIFO, whose /proc link reads "PATH (deleted)". */
  fifo(path: string, owner: { uid: number; gid: number; mode: number }, what: string): number {
    return this.within(path, what, (dir, base) => {
      mknodat(dir, base, S_IF.FIFO | 0o600);
      const h = openat2(dir, base, PATH_FLAGS, 0, RESOLVE_NO_SYMLINKS);
      try {
        fchownat(h, "", owner.uid, owner.gid, AT_EMPTY_PATH);
        fchmodat2(h, "", owner.mode & 0o7777, AT_EMPTY_PATH);
      } catch (err) {
        fdops.close(h);
        throw err;
      } finally {
        unlinkat(dir, base);
      }
      return h;
    });
  }

  /** The mount lives on as long as something made in it. */
  close(): void {
    if (this.root >= 0) fdops.close(this.root);
    this.root = -1;
  }
}
