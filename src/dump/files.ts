// Open files of a task: each open file description once (fds that share one,
// found with kcmp, point to the same entry), with what restore needs to open
// it again: path, flags, offset, and for pipes and FIFOs the queued bytes.
import { create } from "@bufbuild/protobuf";
import {
  ChrFileSchema,
  EventFdFileSchema,
  type FdEntry,
  FdEntrySchema,
  type FileEntry,
  FileEntrySchema,
  FileKind,
  PipeFileSchema,
  RegFileSchema,
} from "../gen/ckpt/images_pb.ts";
import { fd as fdops, O, sameFile } from "../native/mod.ts";
import { readFdInfo } from "../proc/fdinfo.ts";
import { listFds } from "../proc/fdinfo.ts";
import { DumpError } from "../errors.ts";
import { formatBytes } from "../util/units.ts";
import { UnixDumper, type UnixDumpOptions } from "../unix/dump.ts";

const F_GETPIPE_SZ = 1032, F_SETPIPE_SZ = 1031;
const SPLICE_F_NONBLOCK = 2;
/** Content of a file deleted while open is saved up to this size. */
export const MAX_GHOST_BYTES = 64 << 20;

const CHR_ALLOWED = /^\/dev\/(null|zero|full|random|urandom|tty|pts\/\d+|ptmx|console|tty\d*)$/;
const TTY = /^\/dev\/(tty\d*|pts\/\d+|console)$/;

export interface FileOptions {
  shellJob: boolean;
  /** --ext-unix-sk / --external values that let sockets with outside peers go. */
  unix?: UnixDumpOptions;
}

interface Seen {
  pid: number;
  fd: number;
  id: number;
}

export class FileCollector {
  readonly files: FileEntry[] = [];
  private byInode = new Map<string, Seen[]>();
  private byPath = new Map<string, number>();
  private pipeData = new Set<bigint>();

  private readonly unix: UnixDumper;

  constructor(private readonly opts: FileOptions) {
    this.unix = new UnixDumper(
      opts.unix ?? { extUnixSk: [], external: [] },
      (n) => this.ownFile(n),
    );
  }

  private add(entry: Omit<FileEntry, "id" | "$typeName">): number {
    const id = this.files.length + 1;
    this.files.push(create(FileEntrySchema, { ...entry, id }));
    return id;
  }

  /** A file known by path only (cwd, root, the executable, mapped files). */
  addPath(kind: FileKind, path: string, statPath = path): number {
    const key = `${kind}:${path}`;
    const known = this.byPath.get(key);
    if (known) return known;
    const st = Deno.statSync(statPath);
    const id = this.add({
      kind,
      reg: create(RegFileSchema, {
        path,
        flags: kind === FileKind.FILE_DIR ? O.DIRECTORY : O.RDONLY,
        size: BigInt(st.size),
        mtimeNs: BigInt(Math.round((st.mtime?.getTime() ?? 0) * 1e6)),
        mode: st.mode ?? 0,
        dev: BigInt(st.dev),
        ino: BigInt(st.ino ?? 0),
      }),
    });
    this.byPath.set(key, id);
    return id;
  }

  collectFds(pid: number): FdEntry[] {
    let fds: FdEntry[];
    try {
      fds = listFds(pid).map((n) => {
        const info = readFdInfo(pid, n);
        const cloexec = (info.flags & O.CLOEXEC) !== 0;
        const id = this.fileFor(pid, n, info.link, info.flags & ~O.CLOEXEC, info.pos, info.extra);
        return create(FdEntrySchema, { fd: n, fileId: id, cloexec });
      });
    } catch (err) {
      this.unix.release();
      throw err;
    }
    return fds;
  }

  /** Whether a socket's peer is inside is only known once every task's
   * sockets are: called after the last task's collectFds, with all pids. */
  finishSockets(pids: number[]): void {
    try {
      this.unix.finish(pids);
    } catch (err) {
      this.unix.release();
      throw err;
    }
  }

  /** A descriptor ckpt itself holds: one that was in flight in a socket queue. */
  private ownFile(n: number): number {
    const info = readFdInfo(Deno.pid, n);
    return this.fileFor(Deno.pid, n, info.link, info.flags & ~O.CLOEXEC, info.pos, info.extra);
  }

  private fileFor(
    pid: number,
    n: number,
    link: string,
    flags: number,
    pos: bigint,
    extra: Map<string, string>,
  ): number {
    const procFd = `/proc/${pid}/fd/${n}`;
    const st = Deno.statSync(procFd);
    const key = `${st.dev}:${st.ino}`;
    for (const s of this.byInode.get(key) ?? []) {
      if (sameFile(s.pid, s.fd, pid, n)) return s.id;
    }
    const id = this.describe(pid, n, link, flags, pos, extra, st);
    const list = this.byInode.get(key) ?? [];
    list.push({ pid, fd: n, id });
    this.byInode.set(key, list);
    return id;
  }

  private describe(
    pid: number,
    n: number,
    link: string,
    flags: number,
    pos: bigint,
    extra: Map<string, string>,
    st: Deno.FileInfo,
  ): number {
    const where = `fd ${n} of pid ${pid} (${link})`;
    const pipe = /^pipe:\[(\d+)\]$/.exec(link);
    if (pipe) {
      const ino = BigInt(pipe[1]);
      return this.add({
        kind: FileKind.FILE_PIPE,
        pipe: create(PipeFileSchema, {
          pipeIno: ino,
          flags,
          writeEnd: (flags & O.ACCMODE) === O.WRONLY,
          data: this.takePipeData(ino, pid, n),
        }),
      });
    }
    if (link === "anon_inode:[eventfd]") {
      return this.add({
        kind: FileKind.FILE_EVENTFD,
        eventfd: create(EventFdFileSchema, {
          count: BigInt(`0x${extra.get("eventfd-count") ?? "0"}`),
          flags,
          semaphore: extra.get("eventfd-semaphore") === "1",
        }),
      });
    }
    const sock = /^socket:\[(\d+)\]$/.exec(link);
    if (sock) {
      // The id is taken before the queues are read: they may hold this very socket.
      const ino = Number(sock[1]);
      const known = this.unix.known(ino);
      if (known) return known;
      const id = this.add({ kind: FileKind.FILE_UNIX });
      this.files[id - 1].unix = this.unix.describe(id, pid, n, ino, flags, where);
      return id;
    }
    if (link === "anon_inode:[userfaultfd]") {
      throw new DumpError(`${where}: the program's own userfaultfd cannot be dumped yet`);
    }
    if (!link.startsWith("/")) {
      throw new DumpError(`${where}: this kind of file cannot be dumped yet`);
    }
    if (st.isFifo) {
      const ino = BigInt(st.ino ?? 0);
      return this.add({
        kind: FileKind.FILE_FIFO,
        pipe: create(PipeFileSchema, {
          pipeIno: ino,
          flags,
          writeEnd: (flags & O.ACCMODE) === O.WRONLY,
          data: this.takePipeData(ino, pid, n),
          path: link,
        }),
      });
    }
    if (st.isCharDevice) {
      if (!CHR_ALLOWED.test(link)) {
        throw new DumpError(`${where}: character device ${link} cannot be dumped`);
      }
      if (TTY.test(link) && !this.opts.shellJob) {
        throw new DumpError(
          `${where} is a terminal; dump with --shell-job to restore it on the restoring terminal`,
        );
      }
      return this.add({
        kind: FileKind.FILE_CHR,
        chr: create(ChrFileSchema, { path: link, flags, rdev: st.rdev ?? 0 }),
      });
    }
    const deleted = link.endsWith(" (deleted)") && st.nlink === 0;
    const path = deleted ? link.slice(0, -" (deleted)".length) : link;
    let content = new Uint8Array();
    if (deleted) {
      if (st.size > MAX_GHOST_BYTES) {
        throw new DumpError(
          `${where} was deleted while open and holds ${formatBytes(st.size)}; ` +
            `ckpt saves such files up to ${formatBytes(MAX_GHOST_BYTES)}`,
        );
      }
      content = Deno.readFileSync(`/proc/${pid}/fd/${n}`);
    }
    return this.add({
      kind: st.isDirectory ? FileKind.FILE_DIR : FileKind.FILE_REG,
      reg: create(RegFileSchema, {
        path,
        flags,
        pos,
        size: BigInt(st.size),
        mtimeNs: BigInt(Math.round((st.mtime?.getTime() ?? 0) * 1e6)),
        mode: st.mode ?? 0,
        deleted,
        content,
        dev: BigInt(st.dev),
        ino: BigInt(st.ino ?? 0),
      }),
    });
  }

  /** Queued bytes of a pipe, copied with tee(2) so the pipe keeps them. Taken
   * once per pipe; the other ends' entries carry none. */
  private takePipeData(ino: bigint, pid: number, n: number): Uint8Array {
    if (this.pipeData.has(ino)) return new Uint8Array();
    this.pipeData.add(ino);
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
}
