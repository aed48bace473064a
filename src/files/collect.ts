// Dump side of files: every open file description of the tree once (fds
// that share one, found with kcmp, point to the same entry), described by
// the module of its kind (registry.ts). A kind that cannot be dumped is a
// blocker: the fd is named and collection goes on, so a refused dump lists
// every blocker of the tree at once.
import { create } from "@bufbuild/protobuf";
import {
  type FdEntry,
  FdEntrySchema,
  type FileEntry,
  FileEntrySchema,
  FileKind,
  RegFileSchema,
} from "../gen/ckpt/images_pb.ts";
import { fd as fdops, O, sameFile } from "../native/mod.ts";
import { listFds } from "../proc/fdinfo.ts";
import { readProcText } from "../proc/read.ts";
import { DumpError } from "../errors.ts";
import type { DumpContext, DumpedFd } from "./kind.ts";
import { kindForDump } from "./registry.ts";
import { whatIs } from "./unsupported.ts";
import { localOf } from "./kind.ts";
import { unlinkedMapping } from "./unlinked.ts";
import type { MapsEntry } from "../proc/maps.ts";
import { LockCollector } from "./locks.ts";

export interface FileOptions {
  shellJob: boolean;
  /** --ext-unix-sk / --external values that let sockets with outside peers go. */
  unix?: { extUnixSk: string[]; external: string[] };
  /** A pre-dump: mappings are looked at for their pages only, the objects
   * behind memfd and deleted-file mappings are not described (nor read). */
  mappingsOnly?: boolean;
}

interface Seen {
  pid: number;
  fd: number;
  id: number;
}

/** One thing the dump cannot save, with where it is. */
export interface Blocker {
  pid: number;
  fd?: number;
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

/** Reads fd n of pid as /proc shows it. */
export function readDumpedFd(pid: number, n: number): DumpedFd {
  const link = Deno.readLinkSync(`/proc/${pid}/fd/${n}`);
  const infoText = readProcText(pid, `fdinfo/${n}`);
  const info = new Map<string, string>();
  for (const line of infoText.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0 && !info.has(line.slice(0, i))) info.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  const flags = parseInt(info.get("flags") ?? "0", 8);
  return {
    pid,
    fd: n,
    link,
    flags: flags & ~O.CLOEXEC,
    pos: BigInt(info.get("pos") ?? "0"),
    info,
    infoText,
    st: Deno.statSync(`/proc/${pid}/fd/${n}`),
    where: `fd ${n} of pid ${pid} (${link})`,
  };
}

export class FileCollector {
  readonly files: FileEntry[] = [];
  /** Blockers found so far; the dump refuses with all of them at once. */
  readonly blockers: Blocker[] = [];
  private readonly byInode = new Map<string, Seen[]>();
  private readonly byPath = new Map<string, number>();
  private readonly locals = new Map<object, unknown>();
  private readonly finishers: ((pids: number[]) => void)[] = [];
  private readonly releasers: (() => void)[] = [];
  private readonly pidfds = new Map<number, number>();
  private readonly ctx: DumpContext;
  private readonly mappingsOnly: boolean;
  /** flock, OFD and POSIX locks seen in the fds' fdinfo (locks.ts). */
  readonly locks = new LockCollector();

  constructor(opts: FileOptions) {
    this.mappingsOnly = !!opts.mappingsOnly;
    this.ctx = {
      shellJob: opts.shellJob,
      unix: opts.unix ?? { extUnixSk: [], external: [] },
      fileOf: (pid, n) => this.fileFor(readDumpedFd(pid, n)),
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
    };
  }

  private add(body: Omit<Partial<FileEntry>, "id" | "$typeName">): number {
    const id = this.files.length + 1;
    this.files.push(create(FileEntrySchema, { ...body, id }));
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

  /** The entry a mapping of a memfd or of a deleted file refers to (the
   * object its fds share), or undefined for a file that still has a name. */
  unlinkedMapping(pid: number, e: MapsEntry): number | undefined {
    return this.mappingsOnly ? 0 : unlinkedMapping(pid, e, this.ctx);
  }

  /** The fd table of pid; an fd that cannot be dumped is recorded as a
   * blocker (and left out) so that the others are still looked at. */
  collectFds(pid: number): FdEntry[] {
    const out: FdEntry[] = [];
    for (const n of listFds(pid)) {
      let fd: DumpedFd;
      try {
        fd = readDumpedFd(pid, n);
      } catch (err) {
        if ((err as { code?: string }).code === "ENOENT") continue; // closed meanwhile (ckpt's own)
        throw err;
      }
      const cloexec = (parseInt(fd.info.get("flags") ?? "0", 8) & O.CLOEXEC) !== 0;
      try {
        out.push(create(FdEntrySchema, { fd: n, fileId: this.fileFor(fd), cloexec }));
        this.locks.noteFd(fd);
      } catch (err) {
        if (!(err instanceof DumpError)) throw err;
        this.blockers.push({ pid, fd: n, message: err.message });
      }
    }
    return out;
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

  private fileFor(fd: DumpedFd): number {
    const key = `${fd.st.dev}:${fd.st.ino}`;
    for (const s of this.byInode.get(key) ?? []) {
      if (sameFile(s.pid, s.fd, fd.pid, fd.fd)) return s.id;
    }
    const kind = kindForDump(fd, this.ctx);
    if (!kind) throw new DumpError(`${fd.where}: ${whatIs(fd)} cannot be dumped yet`);
    // The id is taken before the body is made: a socket's queue may hold
    // the socket itself, and must find it known.
    const id = this.add({ kind: FileKind.FILE_REG });
    const list = this.byInode.get(key) ?? [];
    list.push({ pid: fd.pid, fd: fd.fd, id });
    this.byInode.set(key, list);
    try {
      const body = kind.dump(fd, this.ctx, id);
      const locks = this.locks.description(fd, id);
      this.files[id - 1] = create(FileEntrySchema, { ...body, id, locks });
    } catch (err) {
      // Left as a placeholder nobody refers to; the dump is refused anyway.
      list.pop();
      throw err;
    }
    return id;
  }
}
