// inotify: every watch with its watch descriptor, mask and inode (found again
// by path, watched.ts). Programs keep wds, so each comes back with its dumped
// number: watches are added in increasing wd order, and the numbers between
// them are used up by throwaway watches first (the kernel hands them out
// cyclically from the last one + 1). Events queued but unread cannot be put
// into a new instance: such a dump is refused. Events the restore itself
// causes on watched files (ckpt opening the task's files) are dropped just
// before the tree runs.
import { create } from "@bufbuild/protobuf";
import {
  FileKind,
  type InotifyFile,
  InotifyFileSchema,
  type InotifyWatch,
  InotifyWatchSchema,
} from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import { IN, inotify as native, queuedBytes, readQueued } from "../native/notify.ts";
import { readProcText } from "../proc/read.ts";
import type { FileKindOps, RestoreContext } from "./kind.ts";
import {
  fields,
  findWatched,
  hexField,
  markedInode,
  mountFds,
  openWatched,
  validWatched,
} from "./watched.ts";

/** Restore takes ~8 µs per wd below the highest (throwaway watches): about
 * 35 s at this bound, which no program gets near but a runaway one. */
export const MAX_WD = 1 << 22;
const MASK_BITS = IN.ALL_EVENTS | IN.ONESHOT | IN.EXCL_UNLINK;
const F_SETFL = 4;
const MFD_CLOEXEC = 1;
const SPARE = {};

export const inotify: FileKindOps = {
  name: "inotify",
  kinds: [FileKind.FILE_INOTIFY],

  claims: (fd) => fd.link === "anon_inode:inotify",

  dump(fd, ctx) {
    const problems: string[] = [];
    const watches: InotifyWatch[] = [];
    // The queue first: what ckpt does below may add to it.
    const copy = ctx.copyFd(fd.pid, fd.fd, fd.where);
    try {
      const queued = queuedBytes(copy);
      if (queued > 0) {
        problems.push(
          `${queued} bytes of events are queued and not read yet; they cannot be put back into ` +
            `a new inotify instance: dump again once the program has read them`,
        );
      }
    } finally {
      fdops.close(copy);
    }
    const mounts = mountFds(ctx);
    for (const line of fd.infoText.split("\n")) {
      if (!line.startsWith("inotify ")) continue;
      const f = fields(line.slice("inotify ".length));
      const wd = hexField(f, "wd"), mask = hexField(f, "mask"), inode = markedInode(f);
      if (wd === undefined || mask === undefined || !inode) {
        problems.push(`a watch fdinfo shows as "${line}" cannot be read`);
        continue;
      }
      if (wd > MAX_WD) {
        problems.push(`watch wd ${wd} is above ${MAX_WD}, the highest ckpt gives back`);
        continue;
      }
      if ((mask & ~MASK_BITS) !== 0) {
        problems.push(`watch wd ${wd} has mask ${hex(mask)}, with bits ckpt does not know`);
        continue;
      }
      try {
        const on = findWatched(inode, mounts, `watch wd ${wd}`);
        watches.push(create(InotifyWatchSchema, { wd, mask, inode: on }));
      } catch (err) {
        if (!(err instanceof DumpError)) throw err;
        problems.push(err.message);
      }
    }
    if (problems.length) throw new DumpError(`${fd.where}: ${problems.join("; ")}`);
    watches.sort((a, b) => a.wd - b.wd);
    return {
      kind: FileKind.FILE_INOTIFY,
      inotify: create(InotifyFileSchema, { flags: fd.flags, watches }),
    };
  },

  validate(f, fail) {
    const i = f.inotify ?? fail("inotify details missing");
    let last = 0;
    for (const w of i.watches) {
      if (w.wd <= last || w.wd > MAX_WD) fail(`inotify wd ${w.wd} out of order or out of range`);
      if ((w.mask & ~MASK_BITS) !== 0 || (w.mask & IN.ALL_EVENTS) === 0) {
        fail(`inotify wd ${w.wd} has mask ${hex(w.mask)}`);
      }
      validWatched(w.inode, fail);
      last = w.wd;
    }
  },

  open(f, ctx, where) {
    const i = f.inotify!;
    // Non-blocking while ckpt empties it; the dumped flags are set last.
    const n = native.init(IN.NONBLOCK | IN.CLOEXEC);
    try {
      addWatches(n, i, ctx, where);
      fdops.fcntl(n, F_SETFL, i.flags & O.NONBLOCK);
      ctx.beforeRun(() => drop(n, i.flags));
      return n;
    } catch (err) {
      fdops.close(n);
      throw err;
    }
  },
};

function addWatches(n: number, i: InotifyFile, ctx: RestoreContext, where: string): void {
  const spare = ctx.local(SPARE, () => {
    const m = fdops.memfd("ckpt-inotify-spare", MFD_CLOEXEC);
    ctx.atClose(() => fdops.close(m));
    return m;
  });
  let next = 1;
  for (const w of i.watches) {
    const path = w.inode!.path;
    if (w.wd > next) {
      try {
        native.burn(n, `/proc/self/fd/${spare}`, next, w.wd - next);
      } catch (err) {
        throw new RestoreError(
          `${where}: cannot give the watch on ${path} its wd ${w.wd}: ${(err as Error).message}`,
        );
      }
    }
    const target = openWatched(ctx, w.inode!, where, `watch wd ${w.wd}`);
    let got: number | NativeError;
    try {
      // MASK_CREATE: a second watch on one inode would be a bad image.
      got = native.addWatch(n, `/proc/self/fd/${target}`, w.mask | IN.MASK_CREATE);
    } finally {
      fdops.close(target);
    }
    if (got instanceof NativeError) {
      throw new RestoreError(`${where}: cannot watch ${path} again (wd ${w.wd}): ${got.message}`);
    }
    if (got !== w.wd) {
      throw new RestoreError(`${where}: the watch on ${path} came back as wd ${got}, not ${w.wd}`);
    }
    next = got + 1;
  }
  const want = i.watches.map((w) => `${w.wd}:${hex(w.mask)}`).join(" ");
  const have = watchesOf(n).join(" ");
  if (have !== want) {
    throw new RestoreError(`${where}: the new instance has watches ${have}, not ${want}`);
  }
}

/** "wd:mask" of every watch of ckpt's fd n, by increasing wd. */
function watchesOf(n: number): string[] {
  const out: [number, string][] = [];
  for (const line of readProcText("self", `fdinfo/${n}`).split("\n")) {
    if (!line.startsWith("inotify ")) continue;
    const f = fields(line.slice("inotify ".length));
    const wd = hexField(f, "wd") ?? -1;
    out.push([wd, `${wd}:${hex(hexField(f, "mask") ?? 0)}`]);
  }
  return out.sort((a, b) => a[0] - b[0]).map((x) => x[1]);
}

/** Drops what is queued: the IN_IGNORED of throwaway watches, and events
 * ckpt caused while restoring (opening files in watched directories). */
function drop(n: number, flags: number): void {
  fdops.fcntl(n, F_SETFL, O.NONBLOCK);
  const buf = new Uint8Array(65536);
  while ((readQueued(n, buf) ?? 0) > 0) { /* dropped */ }
  fdops.fcntl(n, F_SETFL, flags & O.NONBLOCK);
}

function hex(n: number): string {
  return `0x${(n >>> 0).toString(16)}`;
}
