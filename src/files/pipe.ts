// Pipes and FIFOs with the bytes queued in them (read with tee(2), so the
// pipe keeps them; taken once per pipe, on the first end seen). A pipe is
// made again once both its ends are known; a FIFO is opened again by path.
import { create } from "@bufbuild/protobuf";
import { type FileEntry, FileKind, PipeFileSchema } from "../gen/ckpt/images_pb.ts";
import { fd as fdops, O } from "../native/mod.ts";
import type { DumpContext, DumpedFd, FileKindOps, RestoreContext } from "./kind.ts";
import { log } from "../util/log.ts";
import { F_SETFL, OPEN_MASK, STATUS_FLAGS } from "./open_flags.ts";
import { validPath } from "./regular.ts";
import { birthMsAt, S_IF } from "../native/fsops.ts";
import { PrivatePlace } from "./private_place.ts";
import { heldOutside } from "./unlinked.ts";
import { DumpError } from "../errors.ts";

const F_GETPIPE_SZ = 1032, F_SETPIPE_SZ = 1031;
const DELETED = " (deleted)";
const SPLICE_F_NONBLOCK = 2;
/** Queued bytes a pipe entry may carry (root may size a pipe past pipe-max-size). */
export const MAX_PIPE_DATA = 64 << 20;

function dumpPipe(fd: DumpedFd, ctx: DumpContext, ino: bigint, path: string) {
  const writeEnd = (fd.flags & O.ACCMODE) === O.WRONLY;
  // Asked before ckpt opens a reader of its own to copy the queue.
  const otherEndClosed = !path && otherEndGone(ctx, fd, writeEnd);
  const { data, size } = takePipeData(ctx, ino, fd.pid, fd.fd);
  return create(PipeFileSchema, {
    pipeIno: ino,
    flags: fd.flags,
    writeEnd,
    data,
    size,
    path,
    otherEndClosed,
  });
}

const POLLERR = 0x8, POLLHUP = 0x10;

/** Whether no open file anywhere is the pipe's other end: a read end polls
 * POLLHUP once there are no writers, a write end POLLERR once no readers. */
function otherEndGone(ctx: DumpContext, fd: DumpedFd, writeEnd: boolean): boolean {
  const n = ctx.copyFd(fd.pid, fd.fd, fd.where);
  try {
    return (fdops.poll(n, 0) & (writeEnd ? POLLERR : POLLHUP)) !== 0;
  } finally {
    fdops.close(n);
  }
}

/** Queued bytes of a pipe, copied with tee(2) so the pipe keeps them, and
 * its capacity. The bytes are taken once per pipe; the other ends' entries
 * carry none. */
function takePipeData(
  ctx: DumpContext,
  ino: bigint,
  pid: number,
  n: number,
): { data: Uint8Array; size: number } {
  const taken = ctx.local(takePipeData, () => new Map<bigint, number>());
  const known = taken.get(ino);
  if (known !== undefined) return { data: new Uint8Array(), size: known };
  // A fresh read end of the same pipe, whichever end the task holds.
  const src = fdops.open(`/proc/${pid}/fd/${n}`, O.RDONLY | O.NONBLOCK | O.CLOEXEC);
  const [r, w] = fdops.pipe(O.NONBLOCK | O.CLOEXEC);
  try {
    const size = fdops.fcntl(src, F_GETPIPE_SZ);
    taken.set(ino, size);
    fdops.fcntl(w, F_SETPIPE_SZ, size);
    let got = 0;
    try {
      got = fdops.tee(src, w, size, SPLICE_F_NONBLOCK);
    } catch (err) {
      if ((err as { errno?: number }).errno !== 11) throw err; // EAGAIN: empty
    }
    const data = new Uint8Array(got);
    let off = 0;
    while (off < got) off += fdops.read(r, data.subarray(off));
    return { data, size };
  } finally {
    fdops.close(src);
    fdops.close(r);
    fdops.close(w);
  }
}

/** Which ends of each pipe the tree holds: a pipe with one end outside is
 * said at dump, so nobody learns it only at restore. */
function noteEnd(ctx: DumpContext, ino: bigint, writeEnd: boolean, where: string): void {
  const seen = ctx.local(noteEnd, () => {
    const m = new Map<bigint, { read: boolean; write: boolean; where: string }>();
    ctx.atFinish(() => {
      for (const [ino, e] of m) {
        if (e.read && e.write) continue;
        log.warn(
          `${e.where} is one end of pipe:[${ino}], whose other end is outside the tree: ` +
            `restore will close that end unless given --inherit-fd fd[N]:pipe:[${ino}]`,
        );
      }
    });
    return m;
  });
  const e = seen.get(ino) ?? { read: false, write: false, where };
  if (writeEnd) e.write = true;
  else e.read = true;
  seen.set(ino, e);
}

function validatePipe(f: FileEntry, fail: (why: string) => never): void {
  const p = f.pipe ?? fail("pipe details missing");
  if (p.data.length > MAX_PIPE_DATA) fail(`${p.data.length} queued bytes is out of bounds`);
}

export const pipe: FileKindOps = {
  name: "pipe",
  kinds: [FileKind.FILE_PIPE],

  claims: (fd) => fd.link.startsWith("pipe:["),

  dump(fd, ctx) {
    const ino = BigInt(/^pipe:\[(\d+)\]$/.exec(fd.link)![1]);
    const body = dumpPipe(fd, ctx, ino, "");
    if (!body.otherEndClosed) noteEnd(ctx, ino, body.writeEnd, fd.where);
    return { kind: FileKind.FILE_PIPE, pipe: body };
  },

  validate: validatePipe,

  open(f, ctx, where) {
    const p = f.pipe!;
    const made = ctx.local(pipe, () => new Map<bigint, [number, number]>());
    let ends = made.get(p.pipeIno);
    if (!ends) {
      ends = makePipe(f, ctx, where);
      made.set(p.pipeIno, ends);
    }
    const end = p.writeEnd ? ends[1] : ends[0];
    // Each entry is its own open file description of the pipe (reopened
    // through /proc, as the program may have done), so its status flags are
    // its own: a dup would share O_NONBLOCK with every other entry.
    const n = fdops.open(`/proc/self/fd/${end}`, (p.flags & O.ACCMODE) | O.NONBLOCK | O.CLOEXEC);
    fdops.fcntl(n, F_SETFL, p.flags & STATUS_FLAGS);
    return n;
  },

  inheritKey: (f) => `pipe:[${f.pipe?.pipeIno}]`,
};

/** The pipe of entry f, with its capacity and queued bytes. When only one
 * end was in the tree, the other is closed once the bytes are in, as CRIU
 * does: a reader reads what was queued, then end of file; a writer gets
 * EPIPE. `--inherit-fd` hands over the real other end instead. */
function makePipe(f: FileEntry, ctx: RestoreContext, where: string): [number, number] {
  const p = f.pipe!;
  const ends = ctx.entries.values().filter((e) =>
    e.kind === FileKind.FILE_PIPE && e.pipe?.pipeIno === p.pipeIno
  ).toArray();
  const reader = ends.some((e) => !e.pipe!.writeEnd);
  const writer = ends.some((e) => e.pipe!.writeEnd);
  const [r, w] = fdops.pipe(O.CLOEXEC);
  const data = ends.map((e) => e.pipe!.data).find((d) => d.length > 0);
  const size = Math.max(p.size, data?.length ?? 0);
  if (size > 0 && size !== fdops.fcntl(w, F_GETPIPE_SZ)) fdops.fcntl(w, F_SETPIPE_SZ, size);
  if (data && reader) fdops.writeAll(w, new Uint8Array(data));
  if ((!reader || !writer) && !ends.some((e) => e.pipe!.otherEndClosed)) {
    log.warn(
      `${where} is the ${writer ? "write" : "read"} end of pipe:[${p.pipeIno}], whose other end ` +
        `was outside the dumped tree: restored with that end closed (the program ` +
        `${writer ? "gets EPIPE when it writes" : "reads what was queued, then end of file"}); ` +
        `pass the real end with --inherit-fd fd[N]:pipe:[${p.pipeIno}]`,
    );
  }
  // An end no entry holds is closed now; no entry will ask for it.
  for (const [n, held] of [[r, reader], [w, writer]] as const) {
    if (held) ctx.keep(n);
    else fdops.close(n);
  }
  return [r, w];
}

export const fifo: FileKindOps = {
  name: "FIFO",
  kinds: [FileKind.FILE_FIFO],

  claims: (fd) => fd.link.startsWith("/") && fd.st.isFifo === true,

  dump(fd, ctx) {
    // Deleted while open: "/proc/PID/fd/N" reads "PATH (deleted)".
    const deleted = fd.link.endsWith(DELETED) && fd.st.nlink === 0;
    if (fd.link.endsWith(DELETED) && !deleted && !sameFile(fd.link, fd.st)) {
      // Unlinked under the name it was opened by, but alive under another:
      // the FIFO the tree shares with whoever opens that name.
      throw new DumpError(
        `${fd.where}: the FIFO ${fd.link.slice(0, -DELETED.length)} was deleted but still has ` +
          `other names, which ckpt cannot find; open it by a name it has, or dump once it has none`,
      );
    }
    const path = deleted ? fd.link.slice(0, -DELETED.length) : fd.link;
    const body = dumpPipe(fd, ctx, BigInt(fd.st.ino ?? 0), path);
    if (deleted) {
      // Made again, it is the tree's alone: an end held outside would not
      // be joined to it any more.
      const asked = ctx.local(heldOutside, () => new Set<string>());
      const key = `${fd.st.dev}:${fd.st.ino}`;
      if (!asked.has(key)) {
        asked.add(key);
        ctx.atFinish((pids) => {
          const who = heldOutside(ctx, pids, fd.st.dev, fd.st.ino ?? 0);
          if (who) {
            throw new DumpError(
              `${fd.where}: the deleted FIFO ${path} is shared with ${who}, outside the tree; ` +
                `that sharing cannot be restored (dump that process's tree instead)`,
            );
          }
        });
      }
      body.deleted = true;
      body.mode = (fd.st.mode ?? 0) & 0o7777;
      body.uid = fd.st.uid ?? 0;
      body.gid = fd.st.gid ?? 0;
    }
    body.dev = BigInt(fd.st.dev);
    body.btimeMs = BigInt(
      Math.round(fd.st.birthtime?.getTime() ?? birthMsAt(`/proc/${fd.pid}/fd/${fd.fd}`)),
    );
    return { kind: FileKind.FILE_FIFO, pipe: body };
  },

  validate(f, fail) {
    validatePipe(f, fail);
    if (!validPath(f.pipe!.path)) fail("FIFO path is not an absolute path");
  },

  open(f, ctx, where) {
    const p = f.pipe!;
    if (p.deleted) return openDeletedFifo(f, ctx, where);
    // Opened as the task, no symlink followed, and only if it is a FIFO (the
    // very one, on the same machine): its queued bytes are written into it.
    const expect = {
      type: S_IF.FIFO,
      ino: p.pipeIno,
      dev: p.dev || undefined,
      btimeMs: Number(p.btimeMs) || undefined,
    };
    // A read-write opener first, so neither side blocks or fails with ENXIO
    // and the queued bytes can be put back; it is kept until the task holds
    // its own end, and never reaches the task. It is the FIFO found and
    // checked as the task (no symlinks, the very one), opened by ckpt when
    // the task itself may only read or only write it.
    const at = ctx.openPath(p.path, O.PATH, where, expect);
    let keeper: number;
    try {
      keeper = ctx.keep(fdops.open(`/proc/self/fd/${at}`, O.RDWR | O.NONBLOCK | O.CLOEXEC));
    } finally {
      fdops.close(at);
    }
    if (p.size && p.size !== fdops.fcntl(keeper, F_GETPIPE_SZ)) {
      fdops.fcntl(keeper, F_SETPIPE_SZ, p.size);
    }
    const n = ctx.openPath(p.path, (p.flags & OPEN_MASK) | O.NONBLOCK, where, expect);
    if (p.data.length) fdops.writeAll(keeper, new Uint8Array(p.data));
    fdops.fcntl(n, F_SETFL, p.flags & STATUS_FLAGS);
    return n;
  },

  inheritKey: (f) => f.pipe?.deleted ? `${f.pipe.path}${DELETED}` : f.pipe?.path,
};

/** A FIFO deleted while open: made once per dumped FIFO in a private place
 * (private_place.ts: its /proc link reads "PATH (deleted)" again, and no
 * path of anyone's reaches it, as none reached the old one), and every end
 * the tree had opened on it, so that its tasks share one FIFO again. Its
 * ends are opened by ckpt: the FIFO is new, only the tree holds it, and
 * each end has the access its dumped open had. */
function openDeletedFifo(f: FileEntry, ctx: RestoreContext, where: string): number {
  const p = f.pipe!;
  const made = ctx.local(openDeletedFifo, () => {
    const place = new PrivatePlace();
    ctx.atClose(() => place.close());
    return { place, fifos: new Map<string, { at: number; keeper: number }>() };
  });
  const key = `${p.dev}:${p.pipeIno}`;
  let fifo = made.fifos.get(key);
  if (!fifo) {
    const at = ctx.keep(made.place.fifo(p.path, { uid: p.uid, gid: p.gid, mode: p.mode }, where));
    // A read-write end of ckpt's, so that no open blocks or fails with
    // ENXIO and the queued bytes can go in; kept until the tree holds its own.
    const keeper = ctx.keep(fdops.open(`/proc/self/fd/${at}`, O.RDWR | O.NONBLOCK | O.CLOEXEC));
    if (p.size && p.size !== fdops.fcntl(keeper, F_GETPIPE_SZ)) {
      fdops.fcntl(keeper, F_SETPIPE_SZ, p.size);
    }
    fifo = { at, keeper };
    made.fifos.set(key, fifo);
  }
  const n = fdops.open(
    `/proc/self/fd/${fifo.at}`,
    (p.flags & OPEN_MASK) | O.NONBLOCK | O.CLOEXEC,
  );
  if (p.data.length) fdops.writeAll(fifo.keeper, new Uint8Array(p.data));
  fdops.fcntl(n, F_SETFL, p.flags & STATUS_FLAGS);
  return n;
}

/** Whether `path` names the file `st` describes (a live FIFO whose name
 * merely ends in " (deleted)"). */
function sameFile(path: string, st: Deno.FileInfo): boolean {
  try {
    const named = Deno.lstatSync(path);
    return named.dev === st.dev && named.ino === st.ino;
  } catch {
    return false;
  }
}
