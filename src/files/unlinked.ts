// Inodes no path leads to: memfds (memfd_create) and files deleted while open
// or mapped (shm_open + shm_unlink, sem_open + sem_unlink — how Python's
// multiprocessing makes its locks —, O_TMPFILE, a library replaced under a
// running program). Such an inode is one object however many fds and
// mappings reach it, so it is one FileEntry (FILE_UNLINKED) holding its
// content, saved once; each open file description of it is another entry
// (FILE_UNLINKED_OPEN) naming it, and each mapping names it by file id. At
// restore the object is made once (memfd_create, or the file recreated in its
// directory and unlinked again), filled, sealed; every fd is a reopen of it
// and every mapping maps it, so writes through one are seen through all.
import { treePath } from "../mount/view.ts";
import { create } from "@bufbuild/protobuf";
import {
  DataRangeSchema,
  FileKind,
  type UnlinkedInode,
  UnlinkedInodeSchema,
  UnlinkedOpenSchema,
} from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import type { MapsEntry } from "../proc/maps.ts";
import { readProcText } from "../proc/read.ts";
import { formatBytes, hex } from "../util/units.ts";
import { giveOwnerAndMode, recreateDeleted } from "./ghost.ts";
import { asTask } from "../native/creds.ts";
import type { DumpContext, FileKindOps } from "./kind.ts";
import { OPEN_MASK } from "./open_flags.ts";
import { validPath } from "./regular.ts";
import { dataExtents, fstat } from "../native/fsops.ts";
import { credsOf, ownerProblem } from "./owner.ts";
import { remakeProblem } from "./deleted_dir.ts";

/** Content saved of one object (its data, holes left out). */
export const MAX_OBJECT_BYTES = 64 << 20;
/** Content saved of all of them together: files.img, which holds it, is
 * bounded (images/format.ts MAX_PAYLOAD, 256 MiB) and read whole. */
export const MAX_TOTAL_BYTES = 192 << 20;

const DELETED = " (deleted)";
const MEMFD = "/memfd:";
const MEMFD_NAME_MAX = 249; // NAME_MAX - strlen("memfd:")
const MFD_CLOEXEC = 1, MFD_ALLOW_SEALING = 2, MFD_NOEXEC_SEAL = 8, MFD_EXEC = 0x10;
const EINVAL = 22, EACCES = 13;
const F_ADD_SEALS = 1033, F_GET_SEALS = 1034;
export const F_SEAL = {
  SEAL: 1,
  SHRINK: 2,
  GROW: 4,
  WRITE: 8,
  FUTURE_WRITE: 0x10,
  EXEC: 0x20,
} as const;
const KNOWN_SEALS = 0x3f;
const HUGETLBFS_MAGIC = 0x958458f6n;

const INTERNAL: Record<string, string> = {
  "/[aio]": "an AIO ring (io_setup)",
  "/secretmem": "a memfd_secret area",
  "/dev/zero": "shared anonymous memory held as a file",
};

/** Whether a /proc link names something this module dumps: a memfd, or a
 * file whose last name is gone. */
function isUnlinked(link: string, st: Deno.FileInfo): boolean {
  return st.isFile && st.nlink === 0 && link.endsWith(DELETED) && link.startsWith("/");
}

interface Known {
  id: number;
  inode: UnlinkedInode;
}

interface DumpState {
  byInode: Map<string, Known>;
  /** Content bytes saved so far, all objects together. */
  bytes: number;
  /** Devices (major:minor) of the mounts each pid sees. */
  mounts: Map<number, Set<string>>;
  /** Who outside the tree holds which object ("major:minor:ino"), looked
   * up once at the end of the dump. */
  outside?: Map<string, string>;
}

const owner = {};
const state = (ctx: DumpContext): DumpState =>
  ctx.local(owner, () => ({ byInode: new Map(), bytes: 0, mounts: new Map() }));

const objectKey = (dev: number, ino: number | null) => `${devName(dev)}:${ino ?? 0}`;

function devName(dev: number): string {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** Whether the file's filesystem is mounted where pid can see it: a memfd
 * lives on the kernel's internal shm mount, which no mount table lists, and
 * a deleted file on a mounted one. */
function onVisibleMount(s: DumpState, pid: number, dev: number): boolean {
  let devs = s.mounts.get(pid);
  if (!devs) {
    devs = new Set();
    for (const line of readProcText(pid, "mountinfo").split("\n")) {
      const dev = line.split(" ")[2];
      if (dev) devs.add(dev);
    }
    s.mounts.set(pid, devs);
  }
  return devs.has(devName(dev));
}

/** The object's entry for the inode `st` is of, described (content and all)
 * the first time any fd or mapping of it is seen. `openIt` opens a new open
 * file description of it for reading (never the task's own: reading moves
 * an offset, and the task's must stay where it is). */
function objectOf(
  ctx: DumpContext,
  pid: number,
  link: string,
  st: Deno.FileInfo,
  openIt: () => number,
  where: string,
): Known {
  const s = state(ctx);
  const key = objectKey(st.dev, st.ino);
  const known = s.byInode.get(key);
  if (known) return known;
  const visible = onVisibleMount(s, pid, st.dev);
  const path = link.slice(0, -DELETED.length);
  const memfd = !visible && path.startsWith(MEMFD);
  if (!visible && !memfd) {
    // Shared anonymous memory and SysV segments have their own handling
    // (memory.ts); an fd on them, or on another internal mount, is no file.
    const what = INTERNAL[path] ?? "an object on an internal mount";
    throw new DumpError(`${where}: ${what} cannot be dumped yet`);
  }
  const name = memfd ? path.slice(MEMFD.length) : path;
  if (!memfd) {
    if (!validPath(path)) throw new DumpError(`${where}: the deleted file's path is invalid`);
    const parent = path.slice(0, path.lastIndexOf("/")) || "/";
    let dirOk = false;
    try {
      dirOk = Deno.lstatSync(treePath(parent)).isDirectory;
    } catch { /* gone */ }
    // A directory gone too is made again for the moment the file is
    // (deleted_dir.ts), as the task: what it could not make is said now.
    const why = dirOk ? undefined : remakeProblem(pid, path);
    if (why) {
      throw new DumpError(
        `${where}: deleted file ${path} cannot be restored: its directory ${parent} is gone too, ` +
          `and ${why}`,
      );
    }
  }
  let n: number;
  try {
    n = openIt();
  } catch (err) {
    throw new DumpError(`${where}: cannot open it to save it: ${(err as Error).message}`);
  }
  let inode: UnlinkedInode;
  try {
    let seals = 0;
    if (memfd) {
      if (fdops.fstatfs(n).type === HUGETLBFS_MAGIC) {
        throw new DumpError(`${where}: a hugetlb memfd (MFD_HUGETLB) cannot be dumped yet`);
      }
      seals = fdops.fcntl(n, F_GET_SEALS);
    }
    const size = BigInt(st.size);
    let data;
    try {
      data = dataRanges(n, size, where, s);
    } catch (err) {
      if (err instanceof DumpError) throw err;
      throw new DumpError(`${where}: cannot read it: ${(err as Error).message}`);
    }
    inode = create(UnlinkedInodeSchema, {
      memfd,
      name,
      mode: (st.mode ?? 0) & 0o7777,
      uid: st.uid ?? 0,
      gid: st.gid ?? 0,
      size,
      seals,
      data,
      dev: BigInt(st.dev),
      ino: BigInt(st.ino ?? 0),
    });
  } finally {
    fdops.close(n);
  }
  refuseUnrestorableOwner(pid, inode, where);
  const id = ctx.addEntry({ kind: FileKind.FILE_UNLINKED, unlinked: inode });
  const k = { id, inode };
  s.byInode.set(key, k);
  // Restored, it is the tree's alone: a process outside that shares it now
  // would silently stop seeing the tree's writes, and the tree its.
  ctx.atFinish((pids) => {
    s.outside ??= holdersOutside(new Set([...pids, Deno.pid]));
    const who = s.outside.get(key);
    if (who) {
      throw new DumpError(
        `${where}: ${memfd ? `memfd ${name}` : `deleted file ${name}`} is shared with ${who}, ` +
          `outside the tree; that sharing cannot be restored (dump that process's tree instead)`,
      );
    }
  });
  return k;
}

/** Who outside the tree (`pids`) holds the deleted object dev:ino (an fd
 * or a mapping of it), if anybody: "pid N (comm)". Call at finish. */
export function heldOutside(
  ctx: DumpContext,
  pids: number[],
  dev: number,
  ino: number,
): string | undefined {
  const s = state(ctx);
  s.outside ??= holdersOutside(new Set([...pids, Deno.pid]));
  return s.outside.get(objectKey(dev, ino));
}

/** Every memfd and deleted file held (by an fd or a mapping) by a process
 * not in `inside`, by object key, with who holds it. */
function holdersOutside(inside: Set<number>): Map<string, string> {
  const out = new Map<string, string>();
  const maybe = (name: string) => name.startsWith(MEMFD) || name.endsWith(DELETED);
  for (const e of Deno.readDirSync("/proc")) {
    const pid = Number(e.name);
    if (!Number.isInteger(pid) || pid <= 0 || inside.has(pid)) continue;
    const note = (key: string) => {
      if (out.has(key)) return;
      let comm = "";
      try {
        comm = ` (${readProcText(pid, "comm").trim()})`;
      } catch { /* gone */ }
      out.set(key, `pid ${pid}${comm}`);
    };
    try {
      for (const f of Deno.readDirSync(`/proc/${pid}/fd`)) {
        const path = `/proc/${pid}/fd/${f.name}`;
        try {
          if (!maybe(Deno.readLinkSync(path))) continue;
          const st = Deno.statSync(path);
          note(objectKey(st.dev, st.ino));
        } catch { /* closed meanwhile */ }
      }
      for (const line of readProcText(pid, "maps").split("\n")) {
        const m = /^\S+ \S+ \S+ ([0-9a-f]+):([0-9a-f]+) (\d+)\s+(.*)$/.exec(line);
        if (!m || m[3] === "0" || !maybe(m[4])) continue;
        note(`${parseInt(m[1], 16)}:${parseInt(m[2], 16)}:${m[3]}`);
      }
    } catch { /* exited, or a kernel thread */ }
  }
  return out;
}

/** The data of [0, size) as ranges, holes left out (SEEK_DATA/SEEK_HOLE:
 * pages never written, or punched out, take no room and stay holes). */
function dataRanges(n: number, size: bigint, where: string, s: DumpState) {
  const out = [];
  let bytes = 0;
  for (const [start, end] of dataExtents(n, 0n, size)) {
    const len = Number(end - start);
    bytes += len;
    if (bytes > MAX_OBJECT_BYTES) {
      throw new DumpError(
        `${where} holds more than ${formatBytes(MAX_OBJECT_BYTES)} of data; ` +
          `ckpt saves memfds and deleted files up to that size`,
      );
    }
    if (s.bytes + bytes > MAX_TOTAL_BYTES) {
      throw new DumpError(
        `${where}: memfds and deleted files of this tree hold more than ` +
          `${formatBytes(MAX_TOTAL_BYTES)} of data together; ckpt saves up to that much`,
      );
    }
    const buf = new Uint8Array(len);
    let got = 0;
    while (got < len) {
      const r = fdops.pread(n, buf.subarray(got), Number(start) + got);
      if (r === 0) break; // shrunk meanwhile (by a task outside the tree)
      got += r;
    }
    out.push(create(DataRangeSchema, { offset: start, data: buf.subarray(0, got) }));
  }
  s.bytes += bytes;
  return out;
}

/** Dump: the entry a mapping of a memfd or of a deleted file refers to (the
 * object, the same one its fds refer to), or undefined when the mapped file
 * still has a name (mapped by path like any other). */
export function unlinkedMapping(pid: number, e: MapsEntry, ctx: DumpContext): number | undefined {
  const mf = `/proc/${pid}/map_files/${e.start.toString(16)}-${e.end.toString(16)}`;
  const where = `pid ${pid}: mapping of ${e.name} at ${hex(e.start)}`;
  const st = Deno.statSync(mf);
  const link = Deno.readLinkSync(mf);
  if (!isUnlinked(link, st)) {
    if ((st.nlink ?? 0) > 0) {
      // A live file whose name merely ends in " (deleted)" is mapped by path.
      let named: Deno.FileInfo | undefined;
      try {
        named = Deno.statSync(treePath(link));
      } catch { /* no such name */ }
      if (named && named.dev === st.dev && named.ino === st.ino) return undefined;
      throw new DumpError(
        `${where}: the file was deleted but still has other names, which ckpt cannot find`,
      );
    }
    throw new DumpError(`${where}: a deleted file of this kind cannot be dumped`);
  }
  const k = objectOf(ctx, pid, link, st, () => fdops.open(mf, O.RDONLY | O.CLOEXEC), where);
  // F_SEAL_FUTURE_WRITE refuses new writable shared mappings but leaves the
  // ones made before it: this one must be mapped before the seal is added.
  if (e.shared && e.write && (k.inode.seals & F_SEAL.FUTURE_WRITE) !== 0) {
    k.inode.sealAfterMapping = true;
  }
  return k.id;
}

/** The object itself: made once at restore, the master fd (O_RDWR) every
 * open file description is reopened from and every mapping maps. */
export const unlinkedInode: FileKindOps = {
  name: "memfd or deleted file",
  kinds: [FileKind.FILE_UNLINKED],

  // Never an fd of its own: entries come from unlinkedOpen and mappings.
  claims: () => false,
  dump() {
    throw new Error("unlinked inodes are described through their fds and mappings");
  },

  validate(f, fail) {
    const u = f.unlinked ?? fail("unlinked inode details missing");
    if (u.memfd) {
      if (new TextEncoder().encode(u.name).length > MEMFD_NAME_MAX || u.name.includes("\0")) {
        fail("memfd name is invalid");
      }
    } else if (!validPath(u.name) || u.name.endsWith("/")) {
      fail(`deleted file path ${JSON.stringify(u.name.slice(0, 80))} is invalid`);
    }
    if ((u.seals & ~KNOWN_SEALS) !== 0) fail(`unknown seals 0x${u.seals.toString(16)}`);
    if (u.mode > 0o7777) fail("mode out of range");
    if (u.size > BigInt(Number.MAX_SAFE_INTEGER)) fail("size out of range");
    let end = 0n, bytes = 0;
    for (const r of u.data) {
      if (r.offset < end) fail("data ranges unsorted or overlapping");
      end = r.offset + BigInt(r.data.length);
      if (end > u.size) fail("data beyond the object's size");
      bytes += r.data.length;
    }
    if (bytes > MAX_OBJECT_BYTES) fail(`saved content of ${bytes} bytes is out of bounds`);
  },

  open(f, ctx, where) {
    const u = f.unlinked!;
    const what = u.memfd ? `memfd ${u.name}` : `deleted file ${u.name}`;
    // Made with the authority of the task it is opened for (its first
    // holder): created by it, so owned by it, filled, then given the dumped
    // owner and mode as the task could (ghost.ts giveOwnerAndMode) — never a
    // root-owned set-id file for a user's task.
    const a = ctx.authority;
    const fill = (n: number) => {
      fdops.ftruncate(n, Number(u.size));
      for (const r of u.data) fdops.pwriteAll(n, new Uint8Array(r.data), r.offset);
    };
    const owner = { uid: u.uid, gid: u.gid, mode: u.mode };
    const fail = (why: string): never => {
      throw new RestoreError(`${where}: cannot recreate ${what}: ${why}`);
    };
    const n = u.memfd
      ? asTask(a, () => {
        const m = makeMemfd(u, where);
        try {
          fill(m);
          // Before the seals: F_SEAL_EXEC freezes the exec bits.
          giveOwnerAndMode(m, owner, a, fail);
        } catch (err) {
          fdops.close(m);
          throw err;
        }
        return m;
      })
      : recreateDeleted(a, u.name, where, fill, owner, O.RDWR);
    try {
      // Content first (F_SEAL_WRITE refuses writes), the seals last.
      const late = u.sealAfterMapping ? u.seals & (F_SEAL.FUTURE_WRITE | F_SEAL.SEAL) : 0;
      const now = u.seals & ~late;
      if (u.memfd && now) fdops.fcntl(n, F_ADD_SEALS, now);
      if (u.memfd && late) {
        ctx.beforeRun(() => {
          try {
            fdops.fcntl(n, F_ADD_SEALS, late);
          } catch (err) {
            throw new RestoreError(`${where}: cannot seal ${what}: ${(err as Error).message}`);
          }
        });
      }
    } catch (err) {
      fdops.close(n);
      if (err instanceof RestoreError) throw err;
      throw new RestoreError(`${where}: cannot recreate ${what}: ${(err as Error).message}`);
    }
    return n;
  },
};

/** memfd_create for the dumped memfd. Made with the permission to seal in
 * every case: one made without it has exactly F_SEAL_SEAL, which adding
 * F_SEAL_SEAL gives back. MFD_EXEC so that vm.memfd_noexec=1 does not add
 * F_SEAL_EXEC of its own (the dumped seals are added later, exactly). */
function makeMemfd(u: UnlinkedInode, where: string): number {
  const base = MFD_CLOEXEC | MFD_ALLOW_SEALING;
  try {
    return fdops.memfd(u.name, base | MFD_EXEC);
  } catch (err) {
    const errno = err instanceof NativeError ? err.errno : 0;
    // A kernel before 6.3 knows neither flag (nor F_SEAL_EXEC).
    if (errno === EINVAL) return fdops.memfd(u.name, base);
    // vm.memfd_noexec=2 refuses executable memfds.
    if (errno === EACCES && (u.seals & F_SEAL.EXEC) !== 0) {
      return fdops.memfd(u.name, base | MFD_NOEXEC_SEAL);
    }
    if (errno === EACCES) {
      throw new RestoreError(
        `${where}: memfd ${u.name} was executable; this host's vm.memfd_noexec=2 refuses that`,
      );
    }
    throw new RestoreError(`${where}: cannot create memfd ${u.name}: ${(err as Error).message}`);
  }
}

/** An fd's open file description on a memfd or a deleted file. */
export const unlinkedOpen: FileKindOps = {
  name: "memfd or deleted file",
  kinds: [FileKind.FILE_UNLINKED_OPEN],

  claims: (fd) => isUnlinked(fd.link, fd.st),

  dump(fd, ctx) {
    const k = objectOf(
      ctx,
      fd.pid,
      fd.link,
      fd.st,
      () => fdops.open(`/proc/${fd.pid}/fd/${fd.fd}`, O.RDONLY | O.CLOEXEC),
      fd.where,
    );
    return {
      kind: FileKind.FILE_UNLINKED_OPEN,
      unlinkedOpen: create(UnlinkedOpenSchema, { inodeId: k.id, flags: fd.flags, pos: fd.pos }),
    };
  },

  validate(f, fail) {
    const o = f.unlinkedOpen ?? fail("unlinked open file details missing");
    if (o.inodeId === 0) fail("refers to no inode");
  },

  open(f, ctx, where) {
    const o = f.unlinkedOpen!;
    if (ctx.entries.get(o.inodeId)?.kind !== FileKind.FILE_UNLINKED) {
      throw new RestoreError(`${where} refers to inode #${o.inodeId}, which files.img lacks`);
    }
    const master = ctx.get(o.inodeId, where);
    // A reopen is a new open file description of the same inode, with this
    // one's own access mode and status flags. Not O_NOFOLLOW (shm_open
    // opens with it): through /proc/self/fd that refuses the magic link.
    // As the task, like any open: with the access it may have to it — or,
    // when its mode says no now, by ckpt if the task owns the file: an owner
    // may always chmod it, reopen it and chmod it back.
    const a = ctx.authority;
    const flags = (o.flags & OPEN_MASK & ~O.NOFOLLOW) | O.CLOEXEC;
    const path = `/proc/self/fd/${master}`;
    let n = asTask(a, () => fdops.tryOpen(path, flags));
    if (n === null && fstat(master).uid === a.fsuid) n = fdops.tryOpen(path, flags);
    if (n === null) {
      throw new RestoreError(
        `${where}: cannot reopen it: ${a.who} may not open it with the access it had`,
      );
    }
    if (o.pos > 0n) fdops.lseek(n, o.pos, 0);
    return n;
  },
};

/** Restore makes the object as the task that holds it (see unlinkedInode):
 * one the task could not have made with that owner and mode — a root file
 * held by a user's process — is refused now, while the tree still runs. */
function refuseUnrestorableOwner(pid: number, u: UnlinkedInode, where: string): void {
  if (pid === Deno.pid) return; // in flight: judged with its receiver at restore
  let dir: { gid: number; setgid: boolean } | undefined;
  if (!u.memfd) {
    try {
      const d = Deno.statSync(treePath(u.name.slice(0, u.name.lastIndexOf("/")) || "/"));
      dir = { gid: d.gid ?? 0, setgid: ((d.mode ?? 0) & 0o2000) !== 0 };
    } catch { /* gone: refused above */ }
  }
  const c = credsOf(pid);
  const why = ownerProblem(c, u.uid, u.gid, u.mode, dir);
  if (why) {
    throw new DumpError(
      `${where}: ${
        u.memfd ? `memfd ${u.name}` : `deleted file ${u.name}`
      } ${why}: pid ${pid} (uid ${c.fsuid}) could not make such a file itself, and restore ` +
        `recreates it with the task's own authority`,
    );
  }
}
