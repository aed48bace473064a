// Dump side of files: every open file description of the tree once (fds
// that share one, found with kcmp, point to the same entry), described by
// the module of its kind (registry.ts). A kind that cannot be dumped is a
// blocker: the fd is named and collection goes on, so a refused dump lists
// every blocker of the tree at once.
import { onHostMount } from "../mount/view.ts";
import { create } from "@bufbuild/protobuf";
import { newMessage } from "../images/codec.ts";
import {
  type FdEntry,
  FdEntrySchema,
  type FileEntry,
  FileEntrySchema,
  FileKind,
  RegFileSchema,
} from "../gen/ckpt/images_pb.ts";
import { ERRNO, fd as fdops, NativeError, O, sameFile } from "../native/mod.ts";
import { FdMap, listFds, RawFd, readFds } from "../native/fdtable.ts";
import { readProcText } from "../proc/read.ts";
import { DumpError } from "../errors.ts";
import type { DumpContext, DumpedFd, LetGo, NetDumpOptions } from "./kind.ts";
import { kindForDump, KINDS } from "./registry.ts";
import { whatIs } from "./unsupported.ts";
import { localOf } from "./kind.ts";
import { unlinkedMapping } from "./unlinked.ts";
import type { MapsEntry } from "../proc/maps.ts";
import { LockCollector } from "./locks.ts";
import { remakeProblem } from "./deleted_dir.ts";

const DELETED = " (deleted)";

export interface FileOptions {
  shellJob: boolean;
  /** --ext-unix-sk / --external values that let sockets with outside peers go. */
  unix?: { extUnixSk: string[]; external: string[] };
  /** A pre-dump: mappings are looked at for their pages only, the objects
   * behind memfd and deleted-file mappings are not described (nor read). */
  mappingsOnly?: boolean;
  /** CLOCK_MONOTONIC when the tree was frozen, in ns. */
  frozenAtNs?: bigint;
  /** --tcp-established, --tcp-close, --skip-in-flight. */
  net?: NetDumpOptions;
  /** The tree's live tasks. */
  pids?: number[];
}

interface Seen {
  pid: number;
  fd: number;
  id: number;
}

const NONE: readonly Seen[] = [];

/** One thing the dump cannot save, with where it is. */
export interface Blocker {
  pid: number;
  fd?: number;
  /** What it is: "epoll", "a TCP socket", "POSIX timers", "mapping"… */
  kind?: string;
  message: string;
}

/** Several blockers in one refusal: every line names its pid and fd. */
export class BlockedDump extends DumpError {
  constructor(readonly blockers: Blocker[]) {
    super(
      blockers.length === 1
        ? blockers[0].message
        : `${blockers.length} things in this tree cannot be dumped:\n` +
          blockers.map((b) => `  - ${b.message}`).join("\n"),
    );
    this.name = "BlockedDump";
  }
}

/** The name of fd's kind, or what it is when no kind claims it. */
function kindOfFd(fd: DumpedFd, ctx: DumpContext): string {
  try {
    return kindForDump(fd, ctx)?.name ?? whatIs(fd);
  } catch {
    return whatIs(fd);
  }
}

/** Reads fd n of pid as /proc shows it. */
export function readDumpedFd(pid: number, n: number): DumpedFd {
  const link = Deno.readLinkSync(`/proc/${pid}/fd/${n}`);
  const infoText = readProcText(pid, `fdinfo/${n}`);
  return RawFd.of(pid, n, link, infoText, Deno.statSync(`/proc/${pid}/fd/${n}`));
}

export class FileCollector {
  readonly files: FileEntry[] = [];
  /** Blockers found so far; the dump refuses with all of them at once. */
  readonly blockers: Blocker[] = [];
  /** dev → ino → the fds seen of that inode (several open files may share one). */
  private readonly byInode = new Map<number, Map<number, Seen[]>>();
  private readonly byPath = new Map<string, number>();
  /** (pid, fd) → file id, for fds already collected (a task's table does
   * not change while it is frozen), so kinds asking for them cost nothing. */
  private readonly byFd = new FdMap<number>();
  private readonly locals = new Map<object, unknown>();
  private readonly finishers: ((pids: number[]) => void)[] = [];
  private readonly releasers: (() => void)[] = [];
  private readonly letGoers: ((how: LetGo) => void)[] = [];
  private readonly pidfds = new Map<number, number>();
  private readonly skipped = new FdMap<true>();
  private readonly tables = new Map<number, RawFd[]>();
  private readonly ctx: DumpContext;
  private readonly mappingsOnly: boolean;
  /** flock, OFD and POSIX locks seen in the fds' fdinfo (locks.ts). */
  readonly locks = new LockCollector();

  constructor(opts: FileOptions) {
    this.mappingsOnly = !!opts.mappingsOnly;
    this.ctx = {
      shellJob: opts.shellJob,
      frozenAtNs: opts.frozenAtNs ?? 0n,
      unix: opts.unix ?? { extUnixSk: [], external: [] },
      net: opts.net ?? { tcpEstablished: false, tcpClose: false, skipInFlight: false },
      pids: opts.pids ?? [],
      fileOf: (pid, n) => this.byFd.get(pid, n) ?? this.fileFor(readDumpedFd(pid, n)),
      ownFile: (n) => this.fileFor(readDumpedFd(Deno.pid, n)),
      addEntry: (body) => this.add(body),
      copyFd: (pid, n, where) => {
        if (pid === Deno.pid) return fdops.dupAbove(n, 100);
        let pidfd = this.pidfds.get(pid);
        if (pidfd === undefined) this.pidfds.set(pid, pidfd = fdops.pidfdOpen(pid));
        return fdops.pidfdGetfd(pidfd, n, where);
      },
      local: <T>(owner: object, make: () => T): T => localOf(this.locals, owner, make),
      atFinish: (fn) => this.finishers.push(fn),
      atRelease: (fn) => this.releasers.push(fn),
      atLetGo: (fn) => this.letGoers.push(fn),
    };
  }

  private add(body: Omit<Partial<FileEntry>, "id" | "$typeName">): number {
    const id = this.files.length + 1;
    this.files.push(newMessage(FileEntrySchema, { ...body, id }));
    return id;
  }

  /** A file known by path only (cwd, root, the executable, mapped files). */
  addPath(kind: FileKind, path: string, statPath = path): number {
    const key = `${kind}:${path}`;
    const known = this.byPath.get(key);
    if (known) return known;
    const st = Deno.statSync(statPath);
    // A cwd or root deleted since (rmdir): "/proc/PID/cwd" reads "PATH
    // (deleted)"; restore makes it again and removes it (deleted_dir.ts).
    const deleted = kind === FileKind.FILE_DIR && path.endsWith(DELETED) && st.nlink === 0;
    const pid = Number(/^\/proc\/(\d+)\//.exec(statPath)?.[1] ?? 0);
    const why = deleted && pid ? remakeProblem(pid, path.slice(0, -DELETED.length)) : undefined;
    if (why) {
      this.blockers.push({
        pid,
        kind: "directory",
        message: `${statPath} is the deleted directory ${path.slice(0, -DELETED.length)}, and ` +
          `${why}`,
      });
    }
    const id = this.add({
      kind,
      reg: create(RegFileSchema, {
        path: deleted ? path.slice(0, -DELETED.length) : path,
        deleted,
        flags: kind === FileKind.FILE_DIR ? O.DIRECTORY : O.RDONLY,
        size: BigInt(st.size),
        mtimeNs: BigInt(Math.round((st.mtime?.getTime() ?? 0) * 1e6)),
        mode: st.mode ?? 0,
        dev: BigInt(st.dev),
        ino: BigInt(st.ino ?? 0),
        uid: st.uid ?? 0,
        gid: st.gid ?? 0,
        btimeMs: BigInt(Math.round(st.birthtime?.getTime() ?? 0)),
      }),
    });
    this.byPath.set(key, id);
    return id;
  }

  /** The entry a mapping of a memfd or of a deleted file refers to (the
   * object its fds share), or undefined for a file that still has a name. */
  unlinkedMapping(pid: number, e: MapsEntry): number | undefined {
    return this.mappingsOnly ? 0 : unlinkedMapping(pid, e, this.ctx);
  }

  /** The fd table of pid; an fd that cannot be dumped is recorded as a
   * blocker (and left out) so that the others are still looked at. */
  collectFds(pid: number): FdEntry[] {
    const out: FdEntry[] = [];
    const table = this.table(pid);
    this.tables.delete(pid);
    const fds: RawFd[] = [];
    for (const raw of table) {
      if (this.skipped.has(pid, raw.fd)) continue;
      if (raw.errno === ERRNO.ENOENT) continue; // closed meanwhile (ckpt's own)
      if (raw.errno) throw new NativeError("reading", raw.errno, `fd ${raw.fd} of pid ${pid}`);
      fds.push(raw);
    }
    for (const k of KINDS) k.prefetch?.(fds, this.ctx);
    for (const fd of fds) {
      const n = fd.fd;
      const cloexec = fd.cloexec;
      try {
        const fileId = this.fileFor(fd);
        this.byFd.set(pid, n, fileId);
        out.push(newMessage(FdEntrySchema, { fd: n, fileId, cloexec }));
        this.locks.noteFd(fd);
      } catch (err) {
        if (!(err instanceof DumpError)) throw err;
        if (err instanceof BlockedDump) this.blockers.push(...err.blockers);
        else this.blockers.push({ pid, fd: n, kind: kindOfFd(fd, this.ctx), message: err.message });
      }
    }
    return out;
  }

  /** The fd table of frozen task pid as /proc shows it, read once: the
   * write tracking is looked for in it before collectFds describes it. */
  table(pid: number): RawFd[] {
    let t = this.tables.get(pid);
    if (!t) this.tables.set(pid, t = readFds(pid, listFds(pid)));
    return t;
  }

  /** Called after the last task's collectFds, with every pid: what needs the
   * whole tree (where sockets' peers are) is decided here. */
  finish(pids: number[]): void {
    for (const fn of this.finishers) {
      try {
        fn(pids);
      } catch (err) {
        if (err instanceof BlockedDump) this.blockers.push(...err.blockers);
        else if (err instanceof DumpError) this.blockers.push({ pid: 0, message: err.message });
        else throw err;
      }
    }
  }

  /** Throws every blocker found so far as one refusal. */
  throwBlockers(): void {
    if (this.blockers.length) throw new BlockedDump(this.blockers);
  }

  /** Closes what the kinds held for the dump (done or failed). */
  release(): void {
    for (const n of this.pidfds.values()) fdops.close(n);
    this.pidfds.clear();
    for (const fn of this.releasers.splice(0)) {
      try {
        fn();
      } catch { /* best effort: the dump is ending */ }
    }
  }

  /** The tree is about to be let go (or was just killed, or the dump
   * failed): what the kinds hold until then (a connection lock) ends. A
   * failure here is reported after every kind has had its turn. */
  letGo(how: LetGo): void {
    let first: unknown;
    for (const fn of this.letGoers) {
      try {
        fn(how);
      } catch (err) {
        first ??= err;
      }
    }
    if (first && how !== "fail") throw first;
  }

  /** Fds a dump must not look at as the tasks' own (ckpt's write tracking
   * left by a pre-dump, when a dry run leaves it in place). */
  skip(pid: number, fds: Iterable<number>): void {
    for (const n of fds) this.skipped.set(pid, n, true);
  }

  private fileFor(fd: DumpedFd): number {
    let inodes = this.byInode.get(fd.st.dev);
    if (!inodes) this.byInode.set(fd.st.dev, inodes = new Map());
    const ino = fd.st.ino ?? 0;
    for (const s of inodes.get(ino) ?? NONE) {
      if (sameFile(s.pid, s.fd, fd.pid, fd.fd)) return s.id;
    }
    const kind = kindForDump(fd, this.ctx);
    if (!kind) {
      throw new DumpError(
        `${fd.where}: ${whatIs(fd)} cannot be dumped yet; the program must close it before a dump`,
      );
    }
    // The id is taken before the body is made: a socket's queue may hold
    // the socket itself, and must find it known.
    const id = this.files.length + 1;
    this.files.push(undefined as unknown as FileEntry); // made below
    let list = inodes.get(ino);
    if (list) list.push({ pid: fd.pid, fd: fd.fd, id });
    else inodes.set(ino, list = [{ pid: fd.pid, fd: fd.fd, id }]);
    try {
      const body = kind.dump(fd, this.ctx, id);
      const locks = this.locks.description(fd, id);
      // fd.info decodes the fdinfo text: only for a path (not a socket's).
      const hostPath = fd.link.startsWith("/") && onHostMount(fd.info, fd.link);
      this.files[id - 1] = newMessage(FileEntrySchema, { ...body, id, locks, hostPath });
    } catch (err) {
      // Left as a placeholder nobody refers to; the dump is refused anyway.
      this.files[id - 1] = create(FileEntrySchema, { kind: FileKind.FILE_REG, id });
      list.pop();
      throw err;
    }
    return id;
  }
}
