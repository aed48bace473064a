// A file deleted while open, recreated from its saved content with the
// task's authority and without ever following a symlink: the path came from
// the kernel at dump (d_path has no symlinks in it), so a symlink on it now
// can only be a trick to make ckpt write somewhere the image does not
// describe. As the task: the parent is opened with RESOLVE_NO_SYMLINKS, the
// file created in it O_EXCL|O_NOFOLLOW with mode 0600 (no set-id bit while
// it is written), filled, reopened through /proc/self/fd with the task's
// access, then given its owner and mode (fchown/fchmod on the fd; the kernel
// decides whether the task may: a task can never make a file another user's
// — let alone root's — without CAP_CHOWN, nor keep a set-gid bit for a group
// it is not in without CAP_FSETID), checked, and unlinked through the same
// parent fd.
import type { RegFile } from "../gen/ckpt/images_pb.ts";
import { openAt } from "../mount/view.ts";
import { RestoreError } from "../errors.ts";
import { asTask, type Authority } from "../native/creds.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import { openat2, RESOLVE_NO_SYMLINKS, unlinkat } from "../native/integrity.ts";
import { AT_EMPTY_PATH, fchmod, fchownat, fstat } from "../native/fsops.ts";
import { whyFailed } from "./authority.ts";

const EEXIST = 17;

/** What a recreated file is given once filled. */
export interface Owner {
  uid: number;
  gid: number;
  /** Permission and set-id bits. */
  mode: number;
}

/** Returns an fd opened with `flags` on a new, already unlinked file that
 * holds the saved content of `r`, owned and moded as `r` was. */
export function recreateGhost(a: Authority, r: RegFile, flags: number, where: string): number {
  // Images from before owners were recorded: the file stays the task's.
  const owner = r.uid !== undefined && r.gid !== undefined
    ? { uid: r.uid, gid: r.gid, mode: r.mode & 0o7777 }
    : undefined;
  return recreateDeleted(
    a,
    r.path,
    where,
    (n) => fdops.writeAll(n, new Uint8Array(r.content)),
    owner ?? { uid: -1, gid: -1, mode: r.mode & 0o7777 },
    flags,
  );
}

/** A new, already unlinked file in the directory of `path`, made as task
 * `a`: created 0600, filled by `fill`, opened with `flags`, then given
 * `owner` (uid/gid -1: the task's own) and checked. */
export function recreateDeleted(
  a: Authority,
  path: string,
  where: string,
  fill: (n: number) => void,
  owner: Owner,
  flags: number,
): number {
  const slash = path.lastIndexOf("/");
  const parent = path.slice(0, slash) || "/";
  const base = path.slice(slash + 1);
  const fail = (why: string): never => {
    throw new RestoreError(`${where}: cannot recreate deleted file ${path}: ${why}`);
  };
  if (!base || base === "." || base === "..") fail("its path has no file name");
  return asTask(a, () => {
    let dfd = -1;
    try {
      dfd = openAt(parent, O.PATH | O.DIRECTORY | O.CLOEXEC, RESOLVE_NO_SYMLINKS);
    } catch (err) {
      fail(whyFailed(err, a));
    }
    try {
      let name = base, tmp = -1;
      for (let i = 0; tmp < 0; i++) {
        try {
          tmp = openat2(
            dfd,
            name,
            O.RDWR | O.CREAT | O.EXCL | O.NOFOLLOW | O.CLOEXEC,
            0o600,
            RESOLVE_NO_SYMLINKS,
          );
        } catch (err) {
          if (!(err instanceof NativeError && err.errno === EEXIST) || i >= 8) {
            fail(whyFailed(err, a));
          }
          name = `${base}.ckpt-ghost-${crypto.randomUUID().slice(0, 8)}`;
        }
      }
      try {
        fill(tmp);
        const n = fdops.open(`/proc/self/fd/${tmp}`, flags | O.CLOEXEC | O.NOCTTY);
        try {
          giveOwnerAndMode(tmp, owner, a, fail);
        } catch (err) {
          fdops.close(n);
          throw err;
        }
        return n;
      } finally {
        fdops.close(tmp);
        unlinkat(dfd, name);
      }
    } finally {
      fdops.close(dfd);
    }
  });
}

/** Owner first (chown clears set-id bits), then the mode, then a check:
 * chmod silently drops S_ISGID for a group the caller is not in. Call as
 * the task: the kernel then decides what the task may give. */
export function giveOwnerAndMode(n: number, o: Owner, a: Authority, fail: (why: string) => never) {
  const st = fstat(n);
  const uid = o.uid < 0 ? st.uid : o.uid, gid = o.gid < 0 ? st.gid : o.gid;
  if (st.uid !== uid || st.gid !== gid) {
    try {
      fchownat(n, "", uid, gid, AT_EMPTY_PATH);
    } catch (err) {
      fail(
        `it was owned by uid ${uid} gid ${gid}, and ${a.who} could not have given it that ` +
          `owner itself (${(err as Error).message})`,
      );
    }
  }
  fchmod(n, o.mode);
  const now = fstat(n);
  if ((now.mode & 0o7777) !== o.mode || now.uid !== uid || now.gid !== gid) {
    fail(
      `it had mode 0${o.mode.toString(8)} (uid ${uid} gid ${gid}); ${a.who} could only make ` +
        `it 0${(now.mode & 0o7777).toString(8)} (uid ${now.uid} gid ${now.gid})`,
    );
  }
}
