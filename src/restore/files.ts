// Opens, inside ckpt, every file the restored task will hold; the forked
// child inherits them and moves them to their dumped numbers. One open file
// description per FileEntry, so fds that shared one still do.
import { type FileEntry, FileKind } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { log } from "../util/log.ts";
import { UnixSockets } from "../unix/restore.ts";
import { recreateGhost } from "./ghost.ts";

const F_SETFL = 4, F_SETPIPE_SZ = 1031;
const EFD_SEMAPHORE = 1;
const TTY = /^\/dev\/(tty\d*|pts\/\d+|console)$/;
const OPEN_MASK = ~(O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY | O.CLOEXEC);
const STATUS_FLAGS = O.APPEND | O.NONBLOCK | 0o40000 /* O_DIRECT */ | 0o1000000 /* O_NOATIME */;

export type FileValidation = "filesize" | "none";

export interface FileOpenOptions {
  validation: FileValidation;
  shellJob: boolean;
  /** --inherit-fd: "pipe:[INO]" / "socket:[INO]" / path → ckpt's own fd. */
  inherit: Map<string, number>;
  /** --ext-unix-sk values and --ext-unix-sk-missing. */
  unix?: { extUnixSk: string[]; missing: "fail" | "disconnect" };
}

/** The name --inherit-fd uses for a file. */
export function inheritKey(f: FileEntry): string {
  switch (f.kind) {
    case FileKind.FILE_PIPE:
      return `pipe:[${f.pipe?.pipeIno}]`;
    case FileKind.FILE_REG:
    case FileKind.FILE_DIR:
      return f.reg?.path ?? "";
    case FileKind.FILE_CHR:
      return f.chr?.path ?? "";
    case FileKind.FILE_FIFO:
      return f.pipe?.path ?? "";
    case FileKind.FILE_UNIX:
      return `socket:[${f.unix?.ino}]`;
    default:
      return "";
  }
}

export class OpenedFiles {
  private readonly fds = new Map<number, number>();
  private readonly keep: number[] = [];
  private readonly unix: UnixSockets;

  constructor(
    private readonly entries: Map<number, FileEntry>,
    private readonly opts: FileOpenOptions,
  ) {
    this.unix = new UnixSockets(
      entries,
      { ...(opts.unix ?? { extUnixSk: [], missing: "fail" }), inherit: opts.inherit },
      (id, where) => this.get(id, where),
    );
  }

  /** ckpt's fd for file `id`, opened on first use. */
  get(id: number, where: string): number {
    const known = this.fds.get(id);
    if (known !== undefined) return known;
    const f = this.entries.get(id);
    if (!f) throw new RestoreError(`${where} refers to file #${id}, which files.img does not have`);
    const n = this.open(f, where);
    this.fds.set(id, n);
    return n;
  }

  closeAll(): void {
    for (const n of [...this.fds.values(), ...this.keep]) fdops.close(n);
    this.unix.closeAll();
    this.fds.clear();
    this.keep.length = 0;
  }

  private open(f: FileEntry, where: string): number {
    const inherited = this.opts.inherit.get(inheritKey(f));
    if (inherited !== undefined) {
      log.info(`${where}: using inherited fd ${inherited} for ${inheritKey(f)}`);
      return fdops.dupAbove(inherited, 100);
    }
    switch (f.kind) {
      case FileKind.FILE_REG:
      case FileKind.FILE_DIR:
        return this.openReg(f, where);
      case FileKind.FILE_CHR: {
        const c = f.chr!;
        if (this.opts.shellJob && TTY.test(c.path)) return fdops.dupAbove(0, 100);
        return this.openPath(c.path, c.flags & OPEN_MASK, where);
      }
      case FileKind.FILE_PIPE:
        return this.openPipe(f, where);
      case FileKind.FILE_FIFO:
        return this.openFifo(f, where);
      case FileKind.FILE_UNIX:
        return this.unix.open(f, where);
      case FileKind.FILE_EVENTFD: {
        const e = f.eventfd!;
        const n = fdops.eventfd(0, (e.flags & O.NONBLOCK) | (e.semaphore ? EFD_SEMAPHORE : 0));
        if (e.count > 0n) {
          const b = new BigUint64Array([e.count]);
          fdops.write(n, new Uint8Array(b.buffer));
        }
        return n;
      }
      default:
        throw new RestoreError(`${where}: file kind ${f.kind} cannot be restored`);
    }
  }

  private openPath(path: string, flags: number, where: string): number {
    try {
      return fdops.open(path, flags | O.CLOEXEC);
    } catch (err) {
      throw new RestoreError(`${where}: cannot open ${path}: ${(err as Error).message}`);
    }
  }

  private openReg(f: FileEntry, where: string): number {
    const r = f.reg!;
    if (r.deleted) return this.openGhost(f, where);
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(r.path);
    } catch {
      throw new RestoreError(`${where}: ${r.path} is missing (it existed at dump)`);
    }
    // An append-only writer only ever adds to the file, so growth is fine.
    const appendOnly = (r.flags & O.ACCMODE) === O.WRONLY && (r.flags & O.APPEND) !== 0;
    const size = BigInt(st.size);
    const unchanged = size === r.size || (appendOnly && size > r.size);
    if (f.kind === FileKind.FILE_REG && this.opts.validation === "filesize" && !unchanged) {
      throw new RestoreError(
        `${where}: ${r.path} changed since the dump (size ${st.size}, was ${r.size}); ` +
          `restore with --file-validation=none to accept it`,
      );
    }
    const n = this.openPath(r.path, r.flags & OPEN_MASK, where);
    if (r.pos > 0n) fdops.lseek(n, r.pos, 0);
    return n;
  }

  /** A file deleted while open: recreated from its saved content, opened,
   * and unlinked again so the task sees it deleted as before; never through
   * a symlink (see ghost.ts). */
  private openGhost(f: FileEntry, where: string): number {
    const r = f.reg!;
    const n = recreateGhost(r.path, r.mode, new Uint8Array(r.content), r.flags & OPEN_MASK, where);
    if (r.pos > 0n) fdops.lseek(n, r.pos, 0);
    return n;
  }

  private readonly pipes = new Map<bigint, [number, number]>();

  private openPipe(f: FileEntry, where: string): number {
    const p = f.pipe!;
    let ends = this.pipes.get(p.pipeIno);
    if (!ends) {
      const others = [...this.entries.values()].filter((e) =>
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
      this.pipes.set(p.pipeIno, ends);
      this.keep.push(...ends);
    }
    const n = fdops.dupAbove(p.writeEnd ? ends[1] : ends[0], 100);
    fdops.fcntl(n, F_SETFL, p.flags & STATUS_FLAGS);
    return n;
  }

  private openFifo(f: FileEntry, where: string): number {
    const p = f.pipe!;
    // A read-write opener first, so neither side blocks or fails with ENXIO;
    // it is kept until the task holds its own end.
    const keeper = this.openPath(p.path, O.RDWR | O.NONBLOCK, where);
    this.keep.push(keeper);
    const n = this.openPath(p.path, (p.flags & OPEN_MASK) | O.NONBLOCK, where);
    if (p.data.length) fdops.writeAll(keeper, new Uint8Array(p.data));
    fdops.fcntl(n, F_SETFL, p.flags & STATUS_FLAGS);
    return n;
  }
}
