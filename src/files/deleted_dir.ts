// Directories that are gone: a cwd, root or open directory deleted while the
// task had it, and the missing parents of a file deleted while open whose
// directory went too. They are made again where they were — not in a private
// place: ".." of a deleted directory is still its real parent, and a program
// may go there — as the task (its authority decides whether it could make
// them), without following any symlink (the path came from the kernel, which
// puts none in it), 0700 while they exist, and removed again at once, so
// that the task holds a deleted directory as the kernel shows one:
// "PATH (deleted)", no entries, nothing can be created in it.
import { RestoreError } from "../errors.ts";
import { asTask, type Authority } from "../native/creds.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import {
  AT_FDCWD,
  AT_REMOVEDIR,
  openat2,
  RESOLVE_NO_MAGICLINKS,
  RESOLVE_NO_SYMLINKS,
  unlinkat,
} from "../native/integrity.ts";
import { mkdirat } from "../native/private.ts";
import { resolveAt, treePath, viewingTree } from "../mount/view.ts";
import {
  accessible,
  AT_EMPTY_PATH,
  fchmodat2,
  fchownat,
  fstat,
  W_OK,
  X_OK,
} from "../native/fsops.ts";
import { credsOf } from "./owner.ts";
import { log } from "../util/log.ts";
import { whyFailed } from "./authority.ts";
import type { Owner } from "./ghost.ts";
import type { RegFile } from "../gen/ckpt/images_pb.ts";
import type { RestoreContext } from "./kind.ts";

const EPERM = 1, ENOENT = 2, EACCES = 13, EEXIST = 17;
const RESOLVE = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
const DIR_FLAGS = O.PATH | O.DIRECTORY | O.CLOEXEC;

/** Why mkdir failed, for one line. */
function whyNot(err: unknown, a: Authority): string {
  if (err instanceof NativeError && (err.errno === EACCES || err.errno === EPERM)) {
    return `${a.who} may not make it there (permission denied), so restore will not either`;
  }
  return whyFailed(err, a);
}

/** Runs fn with an O_PATH fd of directory `dir`, looked up as task `a`
 * without symlinks, one component at a time; a component that is missing
 * is made (0700, as the task) and removed again once fn returns. `fail`
 * throws the caller's one line. */
export function withDirAs<T>(
  a: Authority,
  dir: string,
  fail: (why: string) => never,
  fn: (dfd: number) => T,
): T {
  const parts = dir.split("/").filter((p) => p !== "");
  if (!dir.startsWith("/") || parts.some((p) => p === "." || p === "..")) {
    fail(`${dir} is not a plain absolute path`);
  }
  return asTask(a, () => {
    const opened: number[] = [];
    const made: { parent: number; name: string; path: string }[] = [];
    const open = (at: number, name: string) => {
      const n = openat2(at, name, DIR_FLAGS, 0, RESOLVE);
      opened.push(n);
      return n;
    };
    let done = false;
    try {
      let cur: number;
      try {
        // The tree's own root when it has a mount namespace (mount/view.ts).
        const root = resolveAt("/", RESOLVE);
        cur = openat2(root.dirfd, root.path, DIR_FLAGS, 0, root.resolve);
        opened.push(cur);
        let here = "";
        for (const p of parts) {
          here += `/${p}`;
          try {
            cur = open(cur, p);
            continue;
          } catch (err) {
            if (!(err instanceof NativeError && err.errno === ENOENT)) throw err;
          }
          try {
            mkdirat(cur, p, 0o700);
          } catch (err) {
            fail(`its missing directory ${here} cannot be made again: ${whyNot(err, a)}`);
          }
          made.push({ parent: cur, name: p, path: here });
          cur = open(cur, p);
        }
      } catch (err) {
        if (err instanceof RestoreError) throw err;
        fail(whyFailed(err, a));
      }
      const out = fn(cur);
      done = true;
      return out;
    } finally {
      try {
        for (const m of made.reverse()) {
          try {
            unlinkat(m.parent, m.name, AT_REMOVEDIR);
          } catch (err) {
            // Only the task's own uid (or root) can have put something in a
            // 0700 directory of the task's.
            if (done) fail(`cannot remove ${m.path} again: ${(err as Error).message}`);
          }
        }
      } finally {
        for (const n of opened) fdops.close(n);
      }
    }
  });
}

/** At dump: why task `pid` could not make the directories of `path` (a
 * deleted directory, or the parents of a deleted file) again itself, as
 * restore will — one line, or undefined when it could. */
export function remakeProblem(pid: number, path: string): string | undefined {
  const c = credsOf(pid);
  const a: Authority = { ...c, who: `pid ${pid} (uid ${c.fsuid})` };
  const parts = path.split("/").filter((p) => p !== "");
  parts.pop();
  return asTask(a, () => {
    // Seen through the frozen root's /proc link when the tree has its own
    // mount namespace (a link ckpt itself trusts at dump).
    let cur = openat2(AT_FDCWD, treePath("/"), DIR_FLAGS, 0, viewingTree() ? 0 : RESOLVE);
    let here = "";
    try {
      for (const p of parts) {
        let next: number;
        try {
          next = openat2(cur, p, DIR_FLAGS, 0, RESOLVE);
        } catch (err) {
          if (err instanceof NativeError && err.errno === ENOENT) break;
          return `${here}/${p} cannot be reached: ${whyFailed(err, a)}`;
        }
        fdops.close(cur);
        cur = next;
        here += `/${p}`;
      }
      if (!accessible(cur, "", W_OK | X_OK, AT_EMPTY_PATH)) {
        return `${a.who} may not make anything in ${here || "/"}, where restore makes it ` +
          `again with the task's authority`;
      }
      return undefined;
    } finally {
      fdops.close(cur);
    }
  });
}

/** The deleted directory of `r` for this restore: made again (as task
 * `a`) the first time, shared by every cwd, root and fd that had it (one
 * inode, as at dump); an fd opened with `flags` (O_PATH for a cwd or root:
 * fchdir and chroot need no more). */
export function deletedDir(
  ctx: RestoreContext,
  a: Authority,
  r: RegFile,
  flags: number,
  where: string,
): number {
  const made = ctx.local(deletedDir, () => new Map<string, number>());
  const key = `${r.dev}:${r.ino}`;
  let p = made.get(key);
  if (p === undefined) {
    p = ctx.keep(recreate(a, r.path, ownerOf(r), where));
    made.set(key, p);
  }
  // Opened by ckpt: the directory is deleted and empty, so an fd of it
  // gives nothing but what its owner and mode allow the task (search, to
  // go to "..") — the access the task's own open had.
  if (flags & O.PATH) return fdops.dupAbove(p, 100);
  return fdops.open(`/proc/self/fd/${p}`, (flags & ~O.CREAT) | O.DIRECTORY | O.CLOEXEC);
}

/** The owner and mode a deleted directory is given back. */
export function ownerOf(r: RegFile): Owner {
  return { uid: r.uid ?? 0, gid: r.gid ?? 0, mode: r.mode & 0o7777 };
}

/** Makes the directory at `path` again as the task, removes it, gives it
 * `owner`'s owner and mode: an O_PATH fd of it. */
function recreate(a: Authority, path: string, owner: Owner, where: string): number {
  const fail = (why: string): never => {
    throw new RestoreError(`${where}: cannot make the deleted directory ${path} again: ${why}`);
  };
  const slash = path.lastIndexOf("/");
  const parent = path.slice(0, slash) || "/";
  const base = path.slice(slash + 1);
  if (!base || base === "." || base === "..") fail("its path has no name");
  let dfd = -1;
  withDirAs(a, parent, fail, (at) => {
    let name = base;
    for (let i = 0;; i++) {
      try {
        mkdirat(at, name, 0o700);
        break;
      } catch (err) {
        if (!(err instanceof NativeError && err.errno === EEXIST) || i >= 8) {
          fail(whyNot(err, a));
        }
        name = `${base}.ckpt-ghost-${crypto.randomUUID().slice(0, 8)}`;
      }
    }
    if (name !== base) {
      log.warn(
        `${where}: ${path} exists again (made after it was deleted): the deleted directory ` +
          `is made again as ${name}, the name its /proc link shows`,
      );
    }
    try {
      dfd = openat2(at, name, DIR_FLAGS, 0, RESOLVE);
    } finally {
      try {
        unlinkat(at, name, AT_REMOVEDIR);
      } catch (err) {
        fail(`cannot remove it again: ${(err as Error).message}`);
      }
    }
  });
  try {
    if (fstat(dfd).nlink !== 0n) fail("it is still there after it was removed");
    // Its owner and mode are given by ckpt: it is deleted, so no entry can
    // ever be made in it and no path reaches it; they only say, as at dump,
    // who may search it (go to "..") — never more than the task could then.
    fchownat(dfd, "", owner.uid, owner.gid, AT_EMPTY_PATH);
    fchmodat2(dfd, "", owner.mode, AT_EMPTY_PATH);
  } catch (err) {
    fdops.close(dfd);
    throw err;
  }
  return dfd;
}
