// A file deleted while open, recreated from its saved content without ever
// following a symlink: the path came from the kernel at dump (d_path has no
// symlinks in it), so a symlink on it now can only be a trick to make ckpt
// write, as root, somewhere the image does not describe. The parent is opened
// with RESOLVE_NO_SYMLINKS, the file created in it with O_EXCL|O_NOFOLLOW,
// reopened through /proc/self/fd (no second lookup) and unlinked through the
// same parent fd.
import { RestoreError } from "../errors.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import { AT_FDCWD, openat2, RESOLVE_NO_SYMLINKS, unlinkat } from "../native/integrity.ts";

const EEXIST = 17, ELOOP = 40;

/** Returns an fd opened with `flags` on a new, already unlinked file that
 * holds `content`, in the directory of `path`. */
export function recreateGhost(
  path: string,
  mode: number,
  content: Uint8Array<ArrayBuffer>,
  flags: number,
  where: string,
): number {
  const slash = path.lastIndexOf("/");
  const parent = path.slice(0, slash) || "/";
  const base = path.slice(slash + 1);
  if (!base || base === "." || base === "..") {
    throw new RestoreError(`${where}: deleted file path ${path} has no file name`);
  }
  let dfd: number;
  try {
    dfd = openat2(AT_FDCWD, parent, O.PATH | O.DIRECTORY | O.CLOEXEC, 0, RESOLVE_NO_SYMLINKS);
  } catch (err) {
    const why = err instanceof NativeError && err.errno === ELOOP
      ? "a symlink is on its path now (it had none at dump); refusing to follow it"
      : (err as Error).message;
    throw new RestoreError(`${where}: cannot recreate deleted file ${path}: ${why}`);
  }
  try {
    let name = base, tmp = -1;
    for (let i = 0; tmp < 0; i++) {
      try {
        tmp = openat2(
          dfd,
          name,
          O.RDWR | O.CREAT | O.EXCL | O.NOFOLLOW | O.CLOEXEC,
          mode & 0o7777,
          RESOLVE_NO_SYMLINKS,
        );
      } catch (err) {
        if (!(err instanceof NativeError && err.errno === EEXIST) || i >= 8) {
          throw new RestoreError(
            `${where}: cannot recreate deleted file ${path}: ${(err as Error).message}`,
          );
        }
        name = `${base}.ckpt-ghost-${crypto.randomUUID().slice(0, 8)}`;
      }
    }
    try {
      fdops.writeAll(tmp, content);
      return fdops.open(`/proc/self/fd/${tmp}`, flags | O.CLOEXEC);
    } finally {
      fdops.close(tmp);
      unlinkat(dfd, name);
    }
  } finally {
    fdops.close(dfd);
  }
}
