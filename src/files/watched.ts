// The inode an inotify watch or a fanotify mark is on. fdinfo names it by
// inode number, superblock and file handle; dump turns that into a path
// (open_by_handle_at from a mount of that filesystem, then the path the kernel
// gives the fd) and checks that the path leads to that very inode. Restore
// opens the path again — O_PATH, through ctx.openPath, so no event is caused
// and the task's view of the tree is what counts — and checks it is still the
// same inode before a watch or mark is put on it. The handle itself is not
// used to open at restore: it would skip every directory permission on the
// way, which a restored task must not get past.
import { create } from "@bufbuild/protobuf";
import { type WatchedInode, WatchedInodeSchema } from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { openByHandle } from "../native/notify.ts";
import { kernelDevName, type Mount, mountIdOf, readMounts } from "../proc/mountinfo.ts";
import { readProcText } from "../proc/read.ts";
import { log } from "../util/log.ts";
import type { DumpContext, RestoreContext } from "./kind.ts";
import { validPath } from "./regular.ts";

/** "key:value" fields of one fdinfo line ("inotify wd:1 ino:9a sdev:…"). */
export function fields(line: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of line.trim().split(/\s+/)) {
    const i = part.indexOf(":");
    if (i > 0) out.set(part.slice(0, i), part.slice(i + 1));
  }
  return out;
}

/** A hex field of fdinfo, or undefined when missing or malformed. */
export function hexField(f: Map<string, string>, key: string): number | undefined {
  const v = f.get(key);
  if (v === undefined || !/^[0-9a-f]+$/i.test(v)) return undefined;
  const n = parseInt(v, 16);
  return n <= 0xffffffff ? n : undefined;
}

/** The inode a mark line names: its number, superblock and file handle. */
export interface MarkedInode {
  ino: bigint;
  sdev: number;
  handleType: number;
  handle: Uint8Array;
}

export function markedInode(f: Map<string, string>): MarkedInode | undefined {
  const ino = f.get("ino"), sdev = hexField(f, "sdev");
  if (!ino || !/^[0-9a-f]+$/i.test(ino) || sdev === undefined) return undefined;
  const hex = f.get("f_handle") ?? "";
  const bytes = hexField(f, "fhandle-bytes") ?? 0;
  const handle = new Uint8Array(hex.length / 2);
  for (let i = 0; i < handle.length; i++) handle[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return {
    ino: BigInt(`0x${ino}`),
    sdev,
    handleType: hexField(f, "fhandle-type") ?? 0,
    handle: handle.length === bytes && /^[0-9a-f]*$/i.test(hex) ? handle : new Uint8Array(),
  };
}

/** Dump: ckpt's fds on the mounts of this mount namespace, opened once
 * each for open_by_handle_at (which takes no O_PATH fd: opening a mount's
 * root reads it, as `ls` would). */
export class MountFds {
  readonly mounts: Mount[] = readMounts();
  private readonly fds = new Map<number, number | null>();

  /** An fd on the root of mount m when its mount point leads to it (not
   * to a mount over it). */
  fdOf(m: Mount): number | null {
    if (!this.fds.has(m.id)) {
      let n = fdops.tryOpen(m.point, O.RDONLY | O.DIRECTORY | O.NOFOLLOW | O.CLOEXEC);
      if (n !== null && mountIdOf(n) !== m.id) {
        fdops.close(n);
        n = null;
      }
      this.fds.set(m.id, n);
    }
    return this.fds.get(m.id)!;
  }

  close(): void {
    for (const n of this.fds.values()) if (n !== null) fdops.close(n);
    this.fds.clear();
  }
}

/** The dump's MountFds, closed when it ends. */
export function mountFds(ctx: DumpContext): MountFds {
  return ctx.local(MountFds, () => {
    const m = new MountFds();
    ctx.atRelease(() => m.close());
    return m;
  });
}

/** Dump: the path of a marked inode, checked to lead to it. `what` says
 * which watch or mark it is, for the refusal when none can be found. */
export function findWatched(m: MarkedInode, mounts: MountFds, what: string): WatchedInode {
  const dev = kernelDevName(m.sdev);
  const where = `inode ${m.ino} on device ${dev}`;
  if (m.handle.length === 0) {
    throw new DumpError(`${what} is on ${where}, for which the kernel gives no file handle`);
  }
  // A mount of the filesystem's root first: a handle outside a bind mount's
  // subtree cannot be opened through it.
  const candidates = mounts.mounts.filter((x) => x.dev === dev)
    .sort((a, b) => Number(b.root === "/") - Number(a.root === "/"));
  for (const mount of candidates) {
    const mfd = mounts.fdOf(mount);
    if (mfd === null) continue;
    const h = openByHandle(mfd, m.handleType, m.handle, O.PATH | O.CLOEXEC);
    if (typeof h !== "number") continue;
    try {
      const found = pathOf(h, m);
      if (found) return found;
    } finally {
      fdops.close(h);
    }
  }
  throw new DumpError(
    `${what} is on ${where}, and no path leads to it (deleted, on a filesystem not mounted ` +
      `here, or out of the dentry cache); ckpt can only put it back by path`,
  );
}

function pathOf(h: number, m: MarkedInode): WatchedInode | undefined {
  const ino = /^ino:\s*(\d+)$/m.exec(readProcText("self", `fdinfo/${h}`))?.[1];
  if (ino !== undefined && BigInt(ino) !== m.ino) return undefined;
  const path = Deno.readLinkSync(`/proc/self/fd/${h}`);
  if (!validPath(path) || path.endsWith(" (deleted)")) return undefined;
  const st = Deno.statSync(`/proc/self/fd/${h}`);
  let byPath: Deno.FileInfo;
  try {
    byPath = Deno.lstatSync(path);
  } catch {
    return undefined;
  }
  if (byPath.dev !== st.dev || byPath.ino !== st.ino) return undefined;
  return create(WatchedInodeSchema, {
    path,
    dev: BigInt(st.dev),
    ino: BigInt(st.ino ?? 0),
    sdev: m.sdev,
    handleType: m.handleType,
    handle: m.handle,
  });
}

export function validWatched(w: WatchedInode | undefined, fail: (why: string) => never): void {
  if (!w) fail("a watched inode is missing");
  if (!validPath(w.path)) {
    fail(`watched path ${JSON.stringify(w.path.slice(0, 80))} is not absolute`);
  }
}

/** Restore: an O_PATH fd on the inode, checked to be the one of the dump
 * (with --file-validation=none another inode at that path is accepted). */
export function openWatched(
  ctx: RestoreContext,
  w: WatchedInode,
  where: string,
  what: string,
): number {
  const n = ctx.openPath(w.path, O.PATH | O.NOFOLLOW, where);
  const st = Deno.statSync(`/proc/self/fd/${n}`);
  if (BigInt(st.dev) === w.dev && BigInt(st.ino ?? 0) === w.ino) return n;
  if (ctx.validation === "none") {
    log.warn(`${where}: ${w.path} is another file than at dump; ${what} is put on it all the same`);
    return n;
  }
  fdops.close(n);
  throw new RestoreError(
    `${where}: ${w.path} is not the file ${what} was on at dump (it was replaced); ` +
      `restore with --file-validation=none to accept it`,
  );
}
