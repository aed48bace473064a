// A tmpfs's files, both halves: read at dump from a detached clone of the
// mount (so nothing mounted over a part of it hides what is there), and made
// again at restore in the new tmpfs, through a clone of it too. Directories
// come before what is in them; a second name of a file is a hard link; the
// data of regular files is saved as the ranges that hold data (holes stay
// holes), with owner, mode, times, device numbers and extended attributes.
import { create } from "@bufbuild/protobuf";
import {
  DataRangeSchema,
  type TmpfsContent,
  TmpfsContentSchema,
  type TmpfsEntry,
  TmpfsEntrySchema,
  XattrSchema,
} from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import { fchmodat2, fchownat, fstatat, S_IF, S_IFMT } from "../native/fsops.ts";
import { openat2, RESOLVE_NO_SYMLINKS } from "../native/integrity.ts";
import {
  linkat,
  listXattrs,
  mkdirat,
  mknodat,
  setXattr,
  symlinkat,
  utimensat,
} from "../native/mount.ts";
import { formatBytes } from "../util/units.ts";

/** What the tmpfs mounts of one tree may hold together (their content is
 * kept in namespaces.img). */
export const MAX_TMPFS_BYTES = 64 << 20;
export const MAX_TMPFS_ENTRIES = 100_000;

const RESOLVE_BENEATH = 8;
const SEEK_DATA = 3, SEEK_HOLE = 4;
const AT_SYMLINK_NOFOLLOW = 0x100, AT_EMPTY_PATH = 0x1000;
const ENXIO = 6;

/** What all the tmpfs mounts of a dump have used so far. */
export interface TmpfsBudget {
  bytes: number;
  entries: number;
}

/** The content of the tmpfs whose detached clone is `clone` (an fd of
 * ckpt's); `where` names the mount in messages. */
export function readTmpfs(clone: number, where: string, budget: TmpfsBudget): TmpfsContent {
  const base = `/proc/self/fd/${clone}`;
  const out = create(TmpfsContentSchema, {});
  const firstName = new Map<string, string>();
  const visit = (rel: string) => {
    if (++budget.entries > MAX_TMPFS_ENTRIES) {
      throw new DumpError(
        `${where}: the tree's tmpfs mounts hold more than ${MAX_TMPFS_ENTRIES} files`,
      );
    }
    const path = rel ? `${base}/${rel}` : base;
    const st = fstatat(clone, rel || "", rel ? AT_SYMLINK_NOFOLLOW : AT_EMPTY_PATH)!;
    const info = Deno.lstatSync(path);
    const e = create(TmpfsEntrySchema, {
      path: rel,
      mode: st.mode,
      uid: st.uid,
      gid: st.gid,
      mtimeNs: st.mtimeNs,
      atimeNs: BigInt(info.atime?.getTime() ?? 0) * 1_000_000n,
    });
    for (const [name, value] of listXattrs(path)) {
      e.xattrs.push(create(XattrSchema, { name, value }));
    }
    const type = st.mode & S_IFMT;
    const id = `${st.dev}:${st.ino}`;
    if (type !== S_IF.DIR && st.nlink > 1n) {
      const first = firstName.get(id);
      if (first !== undefined) {
        out.entries.push(create(TmpfsEntrySchema, { path: rel, linkTo: first }));
        return;
      }
      firstName.set(id, rel);
    }
    out.entries.push(e);
    switch (type) {
      case S_IF.DIR:
        for (const d of [...Deno.readDirSync(path)].map((x) => x.name).sort()) {
          visit(rel ? `${rel}/${d}` : d);
        }
        break;
      case S_IF.LNK:
        e.target = Deno.readLinkSync(path);
        break;
      case S_IF.REG:
        e.size = st.size;
        readData(path, e, where, budget);
        break;
      case S_IF.CHR:
      case S_IF.BLK:
        e.rdev = st.rdev;
        break;
    }
  };
  visit("");
  return out;
}

function readData(path: string, e: TmpfsEntry, where: string, budget: TmpfsBudget): void {
  const n = fdops.open(path, O.RDONLY | O.NOFOLLOW | O.CLOEXEC);
  try {
    const size = e.size;
    let off = 0n;
    while (off < size) {
      let start: bigint;
      try {
        start = fdops.lseek(n, off, SEEK_DATA);
      } catch (err) {
        if (err instanceof NativeError && err.errno === ENXIO) break; // only a hole is left
        throw err;
      }
      const end = fdops.lseek(n, start, SEEK_HOLE);
      const len = Number(end - start);
      budget.bytes += len;
      if (budget.bytes > MAX_TMPFS_BYTES) {
        throw new DumpError(
          `${where}: the tree's tmpfs mounts hold more than ${
            formatBytes(MAX_TMPFS_BYTES)
          } of data (${e.path} alone ${formatBytes(Number(size))}); ckpt saves tmpfs ` +
            `content in the images up to that much`,
        );
      }
      const data = new Uint8Array(len);
      let got = 0;
      while (got < len) {
        const k = fdops.pread(n, data.subarray(got), Number(start) + got);
        if (k === 0) break;
        got += k;
      }
      e.data.push(create(DataRangeSchema, { offset: start, data: data.subarray(0, got) }));
      off = end;
    }
  } finally {
    fdops.close(n);
  }
}

/** Makes `content` in the tmpfs whose clone is `clone` (an O_PATH fd of its
 * root in ckpt). Entries that exist already (mountpoints restore made before
 * the content came) must be of the same type and are given their
 * attributes and data. */
export function writeTmpfs(clone: number, content: TmpfsContent, where: string): void {
  const dirs: TmpfsEntry[] = [];
  for (const e of content.entries) {
    try {
      if (e.linkTo) {
        linkat(clone, e.linkTo, e.path);
        continue;
      }
      make(clone, e);
      if ((e.mode & S_IFMT) === S_IF.DIR) dirs.push(e);
      else if (e.path) times(clone, e);
    } catch (err) {
      throw new RestoreError(
        `${where}: cannot make ${e.path || "its root"} of its tmpfs again: ${
          (err as Error).message
        }`,
      );
    }
  }
  // Directories last, deepest first: filling them changed their times.
  for (const e of dirs.reverse()) times(clone, e);
}

function times(clone: number, e: TmpfsEntry): void {
  utimensat(clone, e.path, e.atimeNs, e.mtimeNs, e.path ? AT_SYMLINK_NOFOLLOW : AT_EMPTY_PATH);
}

function make(clone: number, e: TmpfsEntry): void {
  const type = e.mode & S_IFMT;
  const perm = e.mode & 0o7777;
  const rel = e.path;
  const exists = (): boolean => {
    if (!rel) return true;
    const st = fstatat(clone, rel, AT_SYMLINK_NOFOLLOW);
    if (!st) return false;
    if ((st.mode & S_IFMT) !== type) {
      throw new Error(`something of another type is there already`);
    }
    return true;
  };
  const there = exists();
  switch (type) {
    case S_IF.DIR:
      if (!there) mkdirat(clone, rel, 0o700);
      break;
    case S_IF.LNK:
      if (!there) symlinkat(e.target, clone, rel);
      break;
    case S_IF.REG: {
      const flags = O.WRONLY | O.NOFOLLOW | O.CLOEXEC | (there ? O.TRUNC : O.CREAT | O.EXCL);
      const n = openat2(clone, rel, flags, 0o600, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
      try {
        for (const d of e.data) fdops.pwriteAll(n, d.data as Uint8Array<ArrayBuffer>, d.offset);
        fdops.ftruncate(n, Number(e.size));
      } finally {
        fdops.close(n);
      }
      break;
    }
    default:
      if (!there) mknodat(clone, rel, (e.mode & S_IFMT) | 0o600, e.rdev);
  }
  // Owner first (a chown drops set-id bits), then mode; symlinks have none.
  const at = rel ? AT_SYMLINK_NOFOLLOW : AT_EMPTY_PATH;
  fchownat(clone, rel, e.uid, e.gid, at);
  if (type !== S_IF.LNK) fchmodat2(clone, rel, perm, at);
  const path = `/proc/self/fd/${clone}${rel ? `/${rel}` : ""}`;
  for (const x of e.xattrs) setXattr(path, x.name, x.value as Uint8Array<ArrayBuffer>);
}

/** The entry of `path` in content, if it has one. */
export function entryAt(content: TmpfsContent | undefined, path: string): TmpfsEntry | undefined {
  return content?.entries.find((e) => e.path === path && !e.linkTo);
}
