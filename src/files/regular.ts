// Regular files and directories: path, flags, offset, size and mtime (checked
// at restore), and for a file deleted while open its content, recreated at
// restore in the same directory and unlinked again (ghost.ts).
import { treePath } from "../mount/view.ts";
import { create } from "@bufbuild/protobuf";
import { type FileEntry, FileKind, RegFileSchema } from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { formatBytes } from "../util/units.ts";
import { recreateGhost } from "./ghost.ts";
import { deletedDir, remakeProblem } from "./deleted_dir.ts";
import type { DumpedFd, FileKindOps } from "./kind.ts";
import { credsOf, ownerProblem } from "./owner.ts";
import { OPEN_MASK } from "./open_flags.ts";
import { expectOf } from "./authority.ts";
import { birthMsAt, S_IF } from "../native/fsops.ts";

/** Content of a file deleted while open is saved up to this size. */
export const MAX_GHOST_BYTES = 64 << 20;
const DELETED = " (deleted)";

export const regular: FileKindOps = {
  name: "file",
  kinds: [FileKind.FILE_REG, FileKind.FILE_DIR],

  claims: (fd) =>
    fd.link.startsWith("/") && !fd.link.startsWith("/memfd:") &&
    (fd.st.isFile || fd.st.isDirectory),

  dump(fd) {
    const { st, link, where } = fd;
    const deleted = link.endsWith(DELETED) && st.nlink === 0;
    const path = deleted ? link.slice(0, -DELETED.length) : link;
    let content = new Uint8Array();
    // A deleted directory has no content: it is made again, empty, and
    // removed (deleted_dir.ts).
    if (deleted && st.isDirectory && fd.pid !== Deno.pid) {
      const why = remakeProblem(fd.pid, path);
      if (why) throw new DumpError(`${where} is a deleted directory, and ${why}`);
    }
    if (deleted && !st.isDirectory) {
      if (st.size > MAX_GHOST_BYTES) {
        throw new DumpError(
          `${where} was deleted while open and holds ${formatBytes(st.size)}; ` +
            `ckpt saves such files up to ${formatBytes(MAX_GHOST_BYTES)}`,
        );
      }
      content = Deno.readFileSync(`/proc/${fd.pid}/fd/${fd.fd}`);
      refuseUnrestorableOwner(fd, path);
    }
    return {
      kind: st.isDirectory ? FileKind.FILE_DIR : FileKind.FILE_REG,
      reg: create(RegFileSchema, {
        path,
        flags: fd.flags,
        pos: fd.pos,
        size: BigInt(st.size),
        mtimeNs: BigInt(Math.round((st.mtime?.getTime() ?? 0) * 1e6)),
        mode: st.mode ?? 0,
        deleted,
        content,
        dev: BigInt(st.dev),
        ino: BigInt(st.ino ?? 0),
        uid: st.uid ?? 0,
        gid: st.gid ?? 0,
        btimeMs: BigInt(
          Math.round(st.birthtime?.getTime() ?? birthMsAt(`/proc/${fd.pid}/fd/${fd.fd}`)),
        ),
      }),
    };
  },

  validate(f, fail) {
    const r = f.reg ?? fail("regular file details missing");
    if (!validPath(r.path)) fail(`path ${JSON.stringify(r.path.slice(0, 80))} is not absolute`);
    if (r.content.length > MAX_GHOST_BYTES) {
      fail(`saved content of ${r.content.length} bytes is out of bounds`);
    }
    if (!r.deleted && r.content.length > 0) fail("content for a live file");
    if (f.kind === FileKind.FILE_DIR && r.content.length > 0) fail("content for a directory");
    if (r.deleted && f.kind === FileKind.FILE_REG && BigInt(r.content.length) !== r.size) {
      fail(`saved content is ${r.content.length} bytes, size says ${r.size}`);
    }
  },

  open(f, ctx, where) {
    const r = f.reg!;
    if (r.deleted && f.kind === FileKind.FILE_DIR) {
      const n = deletedDir(ctx, ctx.authority, r, r.flags & OPEN_MASK, where);
      if (r.pos > 0n) fdops.lseek(n, r.pos, 0);
      return n;
    }
    if (r.deleted) {
      // Recreated from its content as the task, given its owner and mode,
      // opened, unlinked again; never through a symlink (see ghost.ts).
      const n = recreateGhost(ctx.authority, r, r.flags & OPEN_MASK, where);
      if (r.pos > 0n) fdops.lseek(n, r.pos, 0);
      return n;
    }
    // An append-only writer only ever adds to the file, so growth is fine.
    const grows = (r.flags & O.ACCMODE) === O.WRONLY && (r.flags & O.APPEND) !== 0;
    const type = f.kind === FileKind.FILE_DIR ? S_IF.DIR : S_IF.REG;
    const n = ctx.openPath(r.path, r.flags & OPEN_MASK, where, { ...expectOf(r, type), grows });
    if (r.pos > 0n) fdops.lseek(n, r.pos, 0);
    return n;
  },

  inheritKey: (f: FileEntry) => f.reg?.path,
};

/** A file deleted while open comes back made by the task itself (ghost.ts):
 * one it could not have made with that owner and mode is refused now. */
function refuseUnrestorableOwner(fd: DumpedFd, path: string): void {
  if (fd.pid === Deno.pid) return; // in flight: judged with its receiver at restore
  const parent = path.slice(0, path.lastIndexOf("/")) || "/";
  let dir: { gid: number; setgid: boolean } | undefined;
  try {
    const d = Deno.statSync(treePath(parent));
    dir = { gid: d.gid ?? 0, setgid: ((d.mode ?? 0) & 0o2000) !== 0 };
  } catch { /* its directory is gone too: restore says so */ }
  const c = credsOf(fd.pid);
  const why = ownerProblem(c, fd.st.uid ?? 0, fd.st.gid ?? 0, (fd.st.mode ?? 0) & 0o7777, dir);
  if (why) {
    throw new DumpError(
      `${fd.where} was deleted while open and ${why}: pid ${fd.pid} (uid ${c.fsuid}) could ` +
        `not make such a file itself, and restore recreates it with the task's own authority`,
    );
  }
}

export function validPath(p: string): boolean {
  return p.startsWith("/") && p.length <= 4096 && !p.includes("\0");
}
