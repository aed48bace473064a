// fanotify: the group's init flags and event file flags, and every mark —
// on an inode (found again by path, watched.ts), a mount (by its mount
// point, checked to be the same mount) or a filesystem — with its flags,
// mask and ignore mask. Refused: events queued and unread (they cannot be
// put back), and permission events (one the program read but has not
// answered is invisible from outside, and its answer would be lost).
import { create } from "@bufbuild/protobuf";
import {
  type FanotifyFile,
  FanotifyFileSchema,
  type FanotifyMark,
  FanotifyMarkKind,
  FanotifyMarkSchema,
  FileKind,
  WatchedInodeSchema,
} from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { FAN, fanotify as native, queuedBytes, readQueued } from "../native/notify.ts";
import { kernelDevName, type Mount, mountIdOf, readMounts } from "../proc/mountinfo.ts";
import { readProcText } from "../proc/read.ts";
import { log } from "../util/log.ts";
import type { DumpedFd, FileKindOps, RestoreContext } from "./kind.ts";
import {
  fields,
  findWatched,
  hexField,
  markedInode,
  type MountFds,
  mountFds,
  openWatched,
  validWatched,
} from "./watched.ts";
import { validPath } from "./regular.ts";

const MFLAGS = FAN.MARK_IGNORED_SURV_MODIFY | FAN.MARK_EVICTABLE | FAN.MARK_IGNORE;
const F_SETFD = 2, F_SETFL = 4, FD_CLOEXEC = 1;
const FAN_EVENT_INFO_TYPE_PIDFD = 4;

export const fanotify: FileKindOps = {
  name: "fanotify",
  kinds: [FileKind.FILE_FANOTIFY],

  claims: (fd) => fd.link === "anon_inode:[fanotify]",

  dump(fd, ctx) {
    const problems: string[] = [];
    const marks: FanotifyMark[] = [];
    // The queue first: what ckpt does below may add to it.
    const queued = queuedOf(fd, ctx.copyFd(fd.pid, fd.fd, fd.where));
    if (queued > 0) {
      problems.push(
        `${queued} bytes of events are queued and not read yet; they cannot be put back into ` +
          `a new group: dump again once the program has read them`,
      );
    }
    const mounts = mountFds(ctx);
    let initFlags: number | undefined, eventFlags: number | undefined;
    for (const line of fd.infoText.split("\n")) {
      if (!line.startsWith("fanotify ")) continue;
      const f = fields(line.slice("fanotify ".length));
      if (f.has("event-flags")) {
        initFlags = hexField(f, "flags");
        eventFlags = hexField(f, "event-flags");
        continue;
      }
      try {
        marks.push(markOf(f, line, mounts));
      } catch (err) {
        if (!(err instanceof DumpError)) throw err;
        problems.push(err.message);
      }
    }
    if (initFlags === undefined || eventFlags === undefined) {
      problems.push("fdinfo does not show the group's flags");
    }
    if (marks.some((m) => ((m.mask | m.ignoredMask) & FAN.PERMISSION_EVENTS) !== 0)) {
      problems.push(
        "the group takes permission events: one the program has read but not answered " +
          "cannot be seen from outside nor given back, and the process waiting on it would be " +
          "answered by the kernel instead",
      );
    }
    if (problems.length) throw new DumpError(`${fd.where}: ${problems.join("; ")}`);
    return {
      kind: FileKind.FILE_FANOTIFY,
      fanotify: create(FanotifyFileSchema, {
        flags: fd.flags,
        initFlags,
        eventFlags,
        marks,
      }),
    };
  },

  validate(f, fail) {
    const a = f.fanotify ?? fail("fanotify details missing");
    for (const m of a.marks) {
      if ((m.mflags & ~MFLAGS) !== 0) fail(`fanotify mark flags ${hex(m.mflags)}`);
      if (m.mask === 0 && m.ignoredMask === 0) fail("a fanotify mark with no mask");
      if (m.kind === FanotifyMarkKind.FANOTIFY_MARK_INODE) validWatched(m.inode, fail);
      else if (!validPath(m.mountPath)) fail("a fanotify mark's mount point is not absolute");
    }
  },

  open(f, ctx, where) {
    const a = f.fanotify!;
    let n: number;
    try {
      n = native.init(a.initFlags, a.eventFlags);
    } catch (err) {
      throw new RestoreError(`${where}: cannot create the group again: ${(err as Error).message}`);
    }
    try {
      fdops.fcntl(n, F_SETFD, FD_CLOEXEC);
      for (const m of a.marks) addMark(n, m, ctx, where);
      const want = a.marks.map((m) => markKey(m, ctx.validation === "none")).sort().join("\n");
      const have = marksOf(n, ctx.validation === "none").sort().join("\n");
      if (have !== want) {
        throw new RestoreError(
          `${where}: the new group has marks [${have.replaceAll("\n", "; ")}], ` +
            `not [${want.replaceAll("\n", "; ")}]`,
        );
      }
      fdops.fcntl(n, F_SETFL, a.flags & O.NONBLOCK);
      ctx.beforeRun(() => drop(n, a));
      return n;
    } catch (err) {
      fdops.close(n);
      throw err;
    }
  },
};

function markOf(f: Map<string, string>, line: string, mounts: MountFds): FanotifyMark {
  const mflags = hexField(f, "mflags"), mask = hexField(f, "mask");
  const ignoredMask = hexField(f, "ignored_mask");
  if (mflags === undefined || mask === undefined || ignoredMask === undefined) {
    throw new DumpError(`a mark fdinfo shows as "${line}" cannot be read`);
  }
  if ((mflags & ~MFLAGS) !== 0) {
    throw new DumpError(`a mark has flags ${hex(mflags)}, which ckpt does not know ("${line}")`);
  }
  const base = { mflags, mask, ignoredMask };
  if (f.has("ino")) {
    const inode = markedInode(f);
    if (!inode) throw new DumpError(`a mark fdinfo shows as "${line}" cannot be read`);
    const on = findWatched(inode, mounts, `the inode mark with mask ${hex(mask)}`);
    return create(FanotifyMarkSchema, {
      ...base,
      kind: FanotifyMarkKind.FANOTIFY_MARK_INODE,
      inode: on,
    });
  }
  if (f.has("mnt_id")) {
    const mntId = hexField(f, "mnt_id") ?? -1;
    const mount = mounts.mounts.find((m) => m.id === mntId);
    if (!mount || !reachable(mount)) {
      throw new DumpError(
        `the mark on mount ${mntId} cannot be put back: no path leads to that mount`,
      );
    }
    return create(FanotifyMarkSchema, {
      ...base,
      kind: FanotifyMarkKind.FANOTIFY_MARK_MOUNT,
      mntId,
      mountPath: mount.point,
    });
  }
  if (f.has("sdev")) {
    const sdev = hexField(f, "sdev") ?? 0;
    const dev = kernelDevName(sdev);
    const mount = mounts.mounts.filter((m) => m.dev === dev)
      .sort((a, b) => Number(b.root === "/") - Number(a.root === "/"))
      .find(reachable);
    if (!mount) {
      throw new DumpError(
        `the mark on filesystem ${dev} cannot be put back: it is not mounted here`,
      );
    }
    return create(FanotifyMarkSchema, {
      ...base,
      kind: FanotifyMarkKind.FANOTIFY_MARK_FILESYSTEM,
      sdev,
      mountPath: mount.point,
    });
  }
  const what = f.has("mnt_ns") ? "a mount-namespace mark" : "a mark of a kind ckpt does not know";
  throw new DumpError(`${what} ("${line}") cannot be dumped yet`);
}

/** Whether the mount point path opens that very mount (not one over it). */
function reachable(m: Mount): boolean {
  const n = fdops.tryOpen(m.point, O.PATH | O.DIRECTORY | O.CLOEXEC);
  if (n === null) return false;
  try {
    return mountIdOf(n) === m.id;
  } finally {
    fdops.close(n);
  }
}

function queuedOf(fd: DumpedFd, copy: number): number {
  try {
    return queuedBytes(copy);
  } catch (err) {
    throw new DumpError(`${fd.where}: cannot see its queue: ${(err as Error).message}`);
  } finally {
    fdops.close(copy);
  }
}

function addMark(n: number, m: FanotifyMark, ctx: RestoreContext, where: string): void {
  const target = markTarget(m, ctx, where);
  try {
    const type = m.kind === FanotifyMarkKind.FANOTIFY_MARK_MOUNT
      ? FAN.MARK_MOUNT
      : m.kind === FanotifyMarkKind.FANOTIFY_MARK_FILESYSTEM
      ? FAN.MARK_FILESYSTEM
      : 0;
    const add = FAN.MARK_ADD | type | (m.mflags & FAN.MARK_EVICTABLE);
    const calls: [number, number][] = [];
    if (m.mask !== 0) calls.push([add, m.mask]);
    if (m.ignoredMask !== 0 || (m.mflags & FAN.MARK_IGNORE) !== 0) {
      const ignore = (m.mflags & FAN.MARK_IGNORE) !== 0 ? FAN.MARK_IGNORE : FAN.MARK_IGNORED_MASK;
      calls.push([add | ignore | (m.mflags & FAN.MARK_IGNORED_SURV_MODIFY), m.ignoredMask]);
    }
    for (const [flags, mask] of calls) {
      const err = native.markFd(n, flags, BigInt(mask >>> 0), target);
      if (err) {
        throw new RestoreError(
          `${where}: cannot put back the ${describe(m)}: ${err.message}`,
        );
      }
    }
  } finally {
    fdops.close(target);
  }
}

function markTarget(m: FanotifyMark, ctx: RestoreContext, where: string): number {
  if (m.kind === FanotifyMarkKind.FANOTIFY_MARK_INODE) {
    return openWatched(ctx, m.inode!, where, `the inode mark with mask ${hex(m.mask)}`);
  }
  const n = ctx.openPath(m.mountPath, O.PATH | O.DIRECTORY | O.NOFOLLOW, where);
  const mntId = mountIdOf(n);
  const same = m.kind === FanotifyMarkKind.FANOTIFY_MARK_MOUNT
    ? mntId === m.mntId
    : readMounts().find((x) => x.id === mntId)?.dev === kernelDevName(m.sdev);
  if (same) return n;
  if (ctx.validation === "none") {
    log.warn(`${where}: ${m.mountPath} is not what it was at dump; the ${describe(m)} goes on it`);
    return n;
  }
  fdops.close(n);
  throw new RestoreError(
    `${where}: ${m.mountPath} is not the mount the ${describe(m)} was on at dump; ` +
      `restore with --file-validation=none to accept it`,
  );
}

function describe(m: FanotifyMark): string {
  switch (m.kind) {
    case FanotifyMarkKind.FANOTIFY_MARK_MOUNT:
      return `mark on mount ${m.mntId} (${m.mountPath})`;
    case FanotifyMarkKind.FANOTIFY_MARK_FILESYSTEM:
      return `mark on filesystem ${kernelDevName(m.sdev)} (${m.mountPath})`;
    default:
      return `mark on ${m.inode?.path}`;
  }
}

/** One mark as both the image and fdinfo describe it, to compare them: the
 * object (by file handle, mount id, superblock) is left out when another one
 * was accepted in its place. */
function markKey(m: FanotifyMark, loose: boolean): string {
  const tail = `mflags:${hex(m.mflags)} mask:${hex(m.mask)} ignored_mask:${hex(m.ignoredMask)}`;
  const obj = m.kind === FanotifyMarkKind.FANOTIFY_MARK_MOUNT
    ? `mount:${m.mntId}`
    : m.kind === FanotifyMarkKind.FANOTIFY_MARK_FILESYSTEM
    ? `fs:${hex(m.sdev)}`
    : `inode:${toHex(m.inode?.handle ?? new Uint8Array())}`;
  return `${loose ? obj.slice(0, obj.indexOf(":")) : obj} ${tail}`;
}

/** The marks of ckpt's fd n as markKey describes them. */
function marksOf(n: number, loose: boolean): string[] {
  const out: string[] = [];
  for (const line of readProcText("self", `fdinfo/${n}`).split("\n")) {
    if (!line.startsWith("fanotify ")) continue;
    const f = fields(line.slice("fanotify ".length));
    if (f.has("event-flags")) continue;
    const m = create(FanotifyMarkSchema, {
      mflags: hexField(f, "mflags") ?? 0,
      mask: hexField(f, "mask") ?? 0,
      ignoredMask: hexField(f, "ignored_mask") ?? 0,
    });
    if (f.has("ino")) {
      m.inode = create(WatchedInodeSchema, { handle: markedInode(f)?.handle });
    } else if (f.has("mnt_id")) {
      m.kind = FanotifyMarkKind.FANOTIFY_MARK_MOUNT;
      m.mntId = hexField(f, "mnt_id") ?? 0;
    } else {
      m.kind = FanotifyMarkKind.FANOTIFY_MARK_FILESYSTEM;
      m.sdev = hexField(f, "sdev") ?? 0;
    }
    out.push(markKey(m, loose));
  }
  return out;
}

/** Empties the queue of the events ckpt's own restore caused; each event
 * may carry an open fd of the file (and a pidfd), which ckpt closes. */
function drop(n: number, a: FanotifyFile): void {
  fdops.fcntl(n, F_SETFL, O.NONBLOCK);
  const buf = new Uint8Array(65536);
  const v = new DataView(buf.buffer);
  let got: number | null;
  while ((got = readQueued(n, buf) ?? 0) > 0) {
    for (let off = 0; off + 24 <= got;) {
      const len = v.getUint32(off, true), metaLen = v.getUint16(off + 6, true);
      if (len < 24) break;
      const fd = v.getInt32(off + 16, true);
      if (fd >= 0) fdops.close(fd);
      for (let i = off + metaLen; i + 4 <= off + len;) {
        const type = buf[i], infoLen = v.getUint16(i + 2, true);
        if (infoLen < 4) break;
        if (type === FAN_EVENT_INFO_TYPE_PIDFD && infoLen >= 8) {
          const pidfd = v.getInt32(i + 4, true);
          if (pidfd >= 0) fdops.close(pidfd);
        }
        i += infoLen;
      }
      off += len;
    }
  }
  fdops.fcntl(n, F_SETFL, a.flags & O.NONBLOCK);
}

function hex(n: number): string {
  return `0x${(n >>> 0).toString(16)}`;
}

function toHex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}
