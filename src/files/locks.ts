// File locks held by the tree, both halves. A flock or OFD lock belongs to an
// open file description: dump reads it from the `lock:` lines of the fdinfo
// of any fd of that description (the kernel lists there the locks whose
// owner is the description), and restore takes it again on the restored
// description from the first task holding it. A POSIX (fcntl) lock belongs to
// the process and the file: fdinfo lists it on the fd it was taken through,
// and the restored task takes it again itself through that fd. Every lock is
// taken by the restorer before credentials are set, non-blocking, after the
// restorer has closed ckpt's service fds: closing any fd of a file drops the
// process's POSIX locks on it, and a mapped file's service fd is one. A lock
// another process holds now fails the restore, before anything is forked,
// with one line naming the file and that holder.
import { create } from "@bufbuild/protobuf";
import {
  type FdTable,
  type FileEntry,
  type FileLock,
  FileLockSchema,
  LockKind,
} from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { OP, PHASE, type PlanOp } from "../restore/plan_buffer.ts";
import type { OpenedFiles } from "./open.ts";
import type { DumpedFd } from "./kind.ts";
import type { Blocker } from "./collect.ts";

/** loff_t OFFSET_MAX: a lock "to the end of the file". */
export const OFFSET_MAX = (1n << 63n) - 1n;
const SYS_fcntl = 72, SYS_flock = 73;
const F_SETLK = 6, F_OFD_SETLK = 37, F_RDLCK = 0, F_WRLCK = 1;
const LOCK_SH = 1, LOCK_EX = 2, LOCK_NB = 4;

/** One line of /proc/locks or an fdinfo `lock:` line. */
export interface LockLine {
  /** POSIX, OFDLCK, FLOCK, LEASE, DELEG, ACCESS… as the kernel spells it. */
  type: string;
  /** A request waiting for this lock ("->" lines of /proc/locks). */
  waiting: boolean;
  write: boolean;
  pid: number;
  /** "MAJ:MIN:INODE", the kernel's spelling (hex device numbers). */
  file: string;
  start: bigint;
  end: bigint;
  text: string;
}

const LINE =
  /^(?:lock:\s*)?\d+:\s*(->\s*)?([A-Z]+)\s+(?:\S+\s+)*?(READ|WRITE|UNLCK)\s+(-?\d+)\s+([0-9a-f]+:[0-9a-f]+:\d+)\s+(\d+)\s+(\d+|EOF)\s*$/;

export function parseLockLine(text: string): LockLine | undefined {
  const m = LINE.exec(text.trim());
  if (!m) return undefined;
  return {
    type: m[2],
    waiting: !!m[1],
    write: m[3] === "WRITE",
    pid: Number(m[4]),
    file: m[5],
    start: BigInt(m[6]),
    end: m[7] === "EOF" ? OFFSET_MAX : BigInt(m[7]),
    text: text.trim().replace(/^lock:\s*/, ""),
  };
}

const NO_LINES: readonly LockLine[] = [];

/** The lock lines of an fdinfo text. */
function fdinfoLocks(fd: DumpedFd): readonly LockLine[] {
  if (fd.lockLines === false) return NO_LINES;
  const out: LockLine[] = [];
  for (const line of fd.infoText.split("\n")) {
    if (!line.startsWith("lock:")) continue;
    const l = parseLockLine(line);
    if (!l) throw new DumpError(`${fd.where}: cannot read its lock line "${line.trim()}"`);
    out.push(l);
  }
  return out;
}

/** The kernel's MAJ:MIN:INODE for a stat result (dev_t as glibc encodes it). */
export function lockFileOf(st: Deno.FileInfo): string {
  const dev = BigInt(st.dev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const h = (n: bigint) => n.toString(16).padStart(2, "0");
  return `${h(major)}:${h(minor)}:${st.ino ?? 0}`;
}

function describe(l: { kind: LockKind; write: boolean; start: bigint; end: bigint }): string {
  const mode = l.write ? "write" : "read";
  if (l.kind === LockKind.LOCK_FLOCK) return `flock (${mode})`;
  const range = l.end === OFFSET_MAX
    ? `from byte ${l.start} to the end`
    : `on bytes ${l.start}-${l.end}`;
  return `${l.kind === LockKind.LOCK_OFD ? "OFD" : "POSIX"} ${mode} lock ${range}`;
}

function lockOf(kind: LockKind, l: LockLine, fd = 0): FileLock {
  return create(FileLockSchema, { kind, write: l.write, start: l.start, end: l.end, fd });
}

/** Dump: the locks of the tree, read from every fd's fdinfo. */
export class LockCollector {
  /** POSIX lock lines by the task whose fdinfo showed them, with the fd. */
  private readonly posix: { pid: number; fd: number; line: LockLine }[] = [];
  /** Descriptions (file ids) holding flock/OFD locks. */
  private readonly described = new Map<number, string>();

  /** The flock and OFD locks of fd's open file description (its first fd
   * seen); a lease or an unknown kind of lock is refused. */
  description(fd: DumpedFd, id: number): FileLock[] {
    const out: FileLock[] = [];
    for (const l of fdinfoLocks(fd)) {
      if (l.type === "FLOCK") out.push(lockOf(LockKind.LOCK_FLOCK, l));
      else if (l.type === "OFDLCK") out.push(lockOf(LockKind.LOCK_OFD, l));
      else if (l.type !== "POSIX") {
        throw new DumpError(
          `${fd.where} holds a ${l.type.toLowerCase()} (${l.text}), which cannot be dumped yet`,
        );
      }
    }
    if (out.length) this.described.set(id, fd.where);
    return out;
  }

  /** Every fd of a task: the POSIX locks its fdinfo shows (the task's own,
   * taken through that fd). */
  noteFd(fd: DumpedFd): void {
    for (const line of fdinfoLocks(fd)) {
      if (line.type === "POSIX") this.posix.push({ pid: fd.pid, fd: fd.fd, line });
    }
  }

  /** Once every fd table is read: each task's POSIX locks, and what cannot
   * be restored. Tasks sharing one fd table (CLONE_FILES) share its locks
   * and each shows them: the lock goes to the task that took it (its pid),
   * or the first. A POSIX lock /proc/locks gives a task of the tree that no
   * fd showed, or a description lock no task holds an fd of (only in flight
   * in a socket), is a blocker. */
  finish(pids: number[], tables: Map<number, FdTable>, procLocks: LockLine[]): Blocker[] {
    const byKey = new Map<string, { pid: number; fd: number; line: LockLine }>();
    for (const p of this.posix) {
      const l = p.line;
      const key = `${l.file}:${l.start}:${l.end}:${l.write}:${l.pid}`;
      const known = byKey.get(key);
      if (!known || (known.pid !== l.pid && p.pid === l.pid)) byKey.set(key, p);
    }
    for (const { pid, fd, line } of byKey.values()) {
      tables.get(pid)?.locks.push(lockOf(LockKind.LOCK_POSIX, line, fd));
    }
    const blockers: Blocker[] = [];
    const inTree = new Set(pids);
    for (const l of procLocks) {
      if (l.waiting || l.type !== "POSIX" || !inTree.has(l.pid)) continue;
      const key = `${l.file}:${l.start}:${l.end}:${l.write}:${l.pid}`;
      if (byKey.has(key)) continue;
      blockers.push({
        pid: l.pid,
        message: `pid ${l.pid} holds a POSIX lock (${l.text}) through no fd ckpt can see; ` +
          `it cannot be dumped`,
      });
    }
    const held = new Set<number>();
    if (this.described.size) {
      for (const t of tables.values()) for (const e of t.fds) held.add(e.fileId);
    }
    for (const [id, where] of this.described) {
      if (held.has(id)) continue;
      blockers.push({
        pid: 0,
        message: `${where} holds a lock and is only in flight in a socket queue; ` +
          `its lock cannot be restored yet`,
      });
    }
    return blockers;
  }
}

/** /proc/locks now. */
export function readProcLocks(): LockLine[] {
  let text = "";
  try {
    text = Deno.readTextFileSync("/proc/locks");
  } catch { /* no file locking in this kernel */ }
  return parseProcLocks(text);
}

/** /proc/locks, read on another thread: to list it the kernel takes its
 * global lock for writing, which first waits for an RCU grace period (10 ms
 * or more) unless another writer just did. A dump reads it while it reads
 * the fd tables: a frozen tree's own POSIX locks cannot change meanwhile. */
export async function readProcLocksAsync(): Promise<LockLine[]> {
  let text = "";
  try {
    text = await Deno.readTextFile("/proc/locks");
  } catch { /* no file locking in this kernel */ }
  return parseProcLocks(text);
}

function parseProcLocks(text: string): LockLine[] {
  return text.split("\n").map(parseLockLine).filter((l) => l !== undefined);
}

export function validateLocks(
  locks: FileLock[],
  fail: (why: string) => never,
  fds?: Set<number>,
): void {
  if (locks.length > 1 << 16) fail(`${locks.length} locks`);
  for (const l of locks) {
    if (!(l.kind in LockKind)) fail(`unknown lock kind ${l.kind}`);
    if (l.start > l.end || l.end > OFFSET_MAX) fail(`lock range ${l.start}-${l.end} is invalid`);
    if (fds ? l.kind !== LockKind.LOCK_POSIX : l.kind === LockKind.LOCK_POSIX) {
      fail(`a ${LockKind[l.kind]} lock where it cannot be`);
    }
    if (fds && !fds.has(l.fd)) fail(`POSIX lock through fd ${l.fd}, which the task does not have`);
  }
}

/** Descriptions whose locks a task of this restore has already taken. */
const taken = new WeakMap<OpenedFiles, Set<number>>();

/** struct flock for F_SETLK / F_OFD_SETLK (l_pid 0). */
function flockStruct(l: FileLock): Uint8Array {
  const b = new Uint8Array(32);
  const dv = new DataView(b.buffer);
  dv.setInt16(0, l.write ? F_WRLCK : F_RDLCK, true);
  dv.setInt16(2, 0, true); // SEEK_SET
  dv.setBigInt64(8, l.start, true);
  dv.setBigInt64(16, l.end === OFFSET_MAX ? 0n : l.end - l.start + 1n, true);
  return b;
}

function conflicts(want: FileLock, file: string, l: LockLine): boolean {
  if (l.waiting || l.file !== file || !(want.write || l.write)) return false;
  if (want.kind === LockKind.LOCK_FLOCK) return l.type === "FLOCK";
  if (l.type !== "POSIX" && l.type !== "OFDLCK") return false;
  return l.start <= want.end && want.start <= l.end;
}

/** Who holds lock line l: its pid, or for an OFD lock (pid -1 in
 * /proc/locks) the process with an fd whose fdinfo shows it. */
function holderOf(l: LockLine): string {
  const name = (pid: number) => {
    try {
      return `pid ${pid} (${Deno.readTextFileSync(`/proc/${pid}/comm`).trim()})`;
    } catch {
      return `pid ${pid}`;
    }
  };
  if (l.pid > 0) return name(l.pid);
  const same = (x: LockLine | undefined) =>
    x && x.type === l.type && x.file === l.file && x.start === l.start && x.end === l.end;
  for (const p of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(p.name)) continue;
    try {
      for (const f of Deno.readDirSync(`/proc/${p.name}/fdinfo`)) {
        const text = Deno.readTextFileSync(`/proc/${p.name}/fdinfo/${f.name}`);
        if (
          text.split("\n").some((line) => line.startsWith("lock:") && same(parseLockLine(line)))
        ) {
          return `${name(Number(p.name))} through its fd ${f.name}`;
        }
      }
    } catch { /* gone, or not ours to read */ }
  }
  return "another process";
}

/** The ops that take a task's locks again (PHASE.BEFORE_CREDS): its POSIX locks, and the flock and OFD locks of
 * descriptions no earlier task took. Refuses, before anything is forked, a
 * lock another process holds now. */
export function lockOps(
  pid: number,
  table: FdTable,
  files: Map<number, FileEntry>,
  opened: OpenedFiles,
): PlanOp[] {
  let done = taken.get(opened);
  if (!done) taken.set(opened, done = new Set());
  const wanted: { fd: number; id: number; lock: FileLock }[] = [];
  for (const l of table.locks) {
    const e = table.fds.find((x) => x.fd === l.fd);
    if (e) wanted.push({ fd: l.fd, id: e.fileId, lock: l });
  }
  for (const e of table.fds) {
    const f = files.get(e.fileId);
    if (!f?.locks.length || done.has(e.fileId)) continue;
    done.add(e.fileId);
    for (const lock of f.locks) wanted.push({ fd: e.fd, id: e.fileId, lock });
  }
  if (wanted.length === 0) return [];
  const now = readProcLocks();
  return wanted.map(({ fd, id, lock }) => {
    const where = `fd ${fd} of pid ${pid}`;
    const f = files.get(id);
    const path = f?.reg?.path ?? f?.pipe?.path ?? `file #${id}`;
    const st = Deno.statSync(`/proc/self/fd/${opened.get(id, where)}`);
    const file = lockFileOf(st);
    const other = now.find((l) => conflicts(lock, file, l));
    if (other) {
      throw new RestoreError(
        `${where}: ${path}: its ${describe(lock)} is held by ${holderOf(other)} now; ` +
          `release it (or stop that process) and restore again`,
      );
    }
    const what = `taking the ${describe(lock)} on ${path} (${where}) again`;
    if (lock.kind === LockKind.LOCK_FLOCK) {
      return {
        op: OP.SYSCALL,
        phase: PHASE.BEFORE_CREDS,
        a: [SYS_flock, fd, (lock.write ? LOCK_EX : LOCK_SH) | LOCK_NB],
        what,
      };
    }
    const cmd = lock.kind === LockKind.LOCK_OFD ? F_OFD_SETLK : F_SETLK;
    return {
      op: OP.SYSCALL,
      phase: PHASE.BEFORE_CREDS,
      a: [SYS_fcntl, fd, cmd, { bytes: flockStruct(lock) }],
      what,
    };
  });
}
