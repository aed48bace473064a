// Pipes and FIFOs with the bytes queued in them (read with tee(2), so the
// pipe keeps them; taken once per pipe, on the first end seen). A pipe is
// made again once both its ends are known; a FIFO is opened again by path.
import { create } from "@bufbuild/protobuf";
import { type FileEntry, FileKind, PipeFileSchema } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { fd as fdops, O } from "../native/mod.ts";
import type { DumpContext, DumpedFd, FileKindOps } from "./kind.ts";
import { F_SETFL, OPEN_MASK, STATUS_FLAGS } from "./open_flags.ts";
import { validPath } from "./regular.ts";

const F_GETPIPE_SZ = 1032, F_SETPIPE_SZ = 1031;
const SPLICE_F_NONBLOCK = 2;
/** Queued bytes a pipe entry may carry (root may size a pipe past pipe-max-size). */
export const MAX_PIPE_DATA = 64 << 20;

function dumpPipe(fd: DumpedFd, ctx: DumpContext, ino: bigint, path: string) {
  return create(PipeFileSchema, {
    pipeIno: ino,
    flags: fd.flags,
    writeEnd: (fd.flags & O.ACCMODE) === O.WRONLY,
    data: takePipeData(ctx, ino, fd.pid, fd.fd),
    path,
  });
}

/** Queued bytes of a pipe, copied with tee(2) so the pipe keeps them. Taken
 * once per pipe; the other ends' entries carry none. */
function takePipeData(ctx: DumpContext, ino: bigint, pid: number, n: number): Uint8Array {
  const taken = ctx.local(takePipeData, () => new Set<bigint>());
  if (taken.has(ino)) return new Uint8Array();
  taken.add(ino);
  // A fresh read end of the same pipe, whichever end the task holds.
  const src = fdops.open(`/proc/${pid}/fd/${n}`, O.RDONLY | O.NONBLOCK | O.CLOEXEC);
  const [r, w] = fdops.pipe(O.NONBLOCK | O.CLOEXEC);
  try {
    const size = fdops.fcntl(src, F_GETPIPE_SZ);
    fdops.fcntl(w, F_SETPIPE_SZ, size);
    let got = 0;
    try {
      got = fdops.tee(src, w, size, SPLICE_F_NONBLOCK);
    } catch (err) {
      if ((err as { errno?: number }).errno !== 11) throw err; // EAGAIN: empty
    }
    const out = new Uint8Array(got);
    let off = 0;
    while (off < got) off += fdops.read(r, out.subarray(off));
    return out;
  } finally {
    fdops.close(src);
    fdops.close(r);
    fdops.close(w);
  }
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
    return { kind: FileKind.FILE_PIPE, pipe: dumpPipe(fd, ctx, ino, "") };
  },

  validate: validatePipe,

  open(f, ctx, where) {
    const p = f.pipe!;
    const made = ctx.local(pipe, () => new Map<bigint, [number, number]>());
    let ends = made.get(p.pipeIno);
    if (!ends) {
      const others = [...ctx.entries.values()].filter((e) =>
        e.kind === FileKind.FILE_PIPE && e.pipe?.pipeIno === p.pipeIno
      );
      if (!others.some((e) => e.pipe!.writeEnd) || !others.some((e) => !e.pipe!.writeEnd)) {
        throw new RestoreError(
          `${where} is one end of pipe:[${p.pipeIno}] whose other end was outside the dumped tree; ` +
            `pass that end with --inherit-fd fd[N]:pipe:[${p.pipeIno}]`,
        );
      }
      ends = fdops.pipe(O.CLOEXEC);
      const data = others.map((e) => e.pipe!.data).find((d) => d.length > 0);
      if (data) {
        if (data.length > 65536) fdops.fcntl(ends[1], F_SETPIPE_SZ, data.length);
        fdops.writeAll(ends[1], new Uint8Array(data));
      }
      made.set(p.pipeIno, ends);
      ctx.keep(ends[0]);
      ctx.keep(ends[1]);
    }
    const n = fdops.dupAbove(p.writeEnd ? ends[1] : ends[0], 100);
    fdops.fcntl(n, F_SETFL, p.flags & STATUS_FLAGS);
    return n;
  },

  inheritKey: (f) => `pipe:[${f.pipe?.pipeIno}]`,
};

export const fifo: FileKindOps = {
  name: "FIFO",
  kinds: [FileKind.FILE_FIFO],

  claims: (fd) => fd.link.startsWith("/") && fd.st.isFifo === true,

  dump(fd, ctx) {
    return {
      kind: FileKind.FILE_FIFO,
      pipe: dumpPipe(fd, ctx, BigInt(fd.st.ino ?? 0), fd.link),
    };
  },

  validate(f, fail) {
    validatePipe(f, fail);
    if (!validPath(f.pipe!.path)) fail("FIFO path is not an absolute path");
  },

  open(f, ctx, where) {
    const p = f.pipe!;
    // A read-write opener first, so neither side blocks or fails with ENXIO;
    // it is kept until the task holds its own end.
    const keeper = ctx.keep(ctx.openPath(p.path, O.RDWR | O.NONBLOCK, where));
    const n = ctx.openPath(p.path, (p.flags & OPEN_MASK) | O.NONBLOCK, where);
    if (p.data.length) fdops.writeAll(keeper, new Uint8Array(p.data));
    fdops.fcntl(n, F_SETFL, p.flags & STATUS_FLAGS);
    return n;
  },

  inheritKey: (f) => f.pipe?.path,
};
