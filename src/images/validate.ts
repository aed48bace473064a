// Bounds and consistency of everything read from an images directory, checked
// before any of it drives an allocation, a loop, a system call or a plan: a
// damaged or hostile image is a one-line ImageError naming the file, never a
// crash, a hang or a wrong process. Restore calls this right after reading
// images; the fuzz test drives it with damaged inputs.
import {
  type FdTable,
  type FileEntry,
  FileKind,
  type FilesImage,
  type Inventory,
  MlockMode,
  type MmImage,
  type PagemapImage,
  type TaskCore,
  VmaKind,
} from "../gen/ckpt/images_pb.ts";
import { ImageError } from "../errors.ts";
import { coreName, fdName, FILES, INVENTORY, mmName, pagemapName, pagesName } from "./dir.ts";
import { FORMAT_VERSION, MAX_PAYLOAD, PAGE_SIZE } from "./format.ts";
import { kindOf } from "../files/registry.ts";
import { validateLocks } from "../files/locks.ts";
import { validatePosixTimers } from "../task/posix_timers.ts";
import { validateVmFlags } from "../task/vma_flags.ts";

const PAGE = BigInt(PAGE_SIZE);
/** The kernel's limits the restored task must fit in anyway. */
export const LIMITS = {
  pidMax: 4_194_304, // PID_MAX_LIMIT
  tasks: 32_768,
  threads: 32_768,
  vmas: 1 << 20, // vm.max_map_count can be raised; 1M is far past any real task
  fds: 1 << 20, // NR_OPEN
  files: 1 << 20,
  groups: 65_536, // NGROUPS_MAX
  queuedSignals: 65_536,
  rlimits: 16, // RLIM_NLIMITS
  auxv: 64 * 16, // well above sizeof(mm->saved_auxv); PR_SET_MM_MAP refuses more
  regs: 27 * 8, // struct user_regs_struct
  xsaveMin: 576, // legacy area + XSAVE header
  xsaveMax: 64 << 10,
  siginfo: 128,
  comm: 16, // TASK_COMM_LEN, with its NUL
  path: 4096, // PATH_MAX
  taskSize: 0x7ffffffff000n,
  seccompFilters: 4096, // each costs at least 4 of MAX_INSNS_PER_PATH (32768)
  seccompInsns: 4096, // BPF_MAXINSNS
} as const;
const VSYSCALL = 0xffffffffff600000n;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A zombie has a core only; every other task all four images. */
export interface TaskImages {
  core: TaskCore;
  mm?: MmImage;
  pagemap?: PagemapImage;
  fdTable?: FdTable;
}

function fail(file: string, msg: string): never {
  throw new ImageError(file, msg);
}

function count(file: string, what: string, n: number, max: number, min = 0): void {
  if (n < min || n > max) {
    fail(file, `${n} ${what} is out of bounds (${min}..${max}): the image is damaged`);
  }
}

function isPid(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= LIMITS.pidMax;
}

/** The inventory: format, page size, tasks, and the list of files, whose
 * names must be plain file names (never paths). */
export function validateInventory(dir: string, inv: Inventory): void {
  const file = `${dir}/${INVENTORY}`;
  if (inv.formatVersion < 1 || inv.formatVersion > FORMAT_VERSION) {
    fail(file, `format version ${inv.formatVersion} is not supported by this ckpt`);
  }
  if (inv.pageSize !== PAGE_SIZE) fail(file, `page size ${inv.pageSize} is not ${PAGE_SIZE}`);
  count(file, "tasks", inv.pids.length, LIMITS.tasks, 1);
  const pids = new Set<number>();
  for (const p of inv.pids) {
    if (!isPid(p) || pids.has(p)) fail(file, `task pid ${p} is invalid or repeated`);
    pids.add(p);
  }
  if (!pids.has(inv.rootPid)) fail(file, `root pid ${inv.rootPid} is not among the tasks`);
  if (inv.parent.length > LIMITS.path || inv.parent.includes("\0")) {
    fail(file, "the parent images path is invalid");
  }
  count(file, "files", inv.files.length, 5 * inv.pids.length + 16, 1);
  const names = new Set<string>();
  for (const f of inv.files) {
    if (!NAME.test(f.name) || names.has(f.name)) {
      fail(file, `file name ${JSON.stringify(f.name.slice(0, 80))} is invalid or repeated`);
    }
    names.add(f.name);
    const max = f.name.startsWith("pages-") ? LIMITS.taskSize : BigInt(MAX_PAYLOAD + 24);
    if (f.size > max) fail(file, `${f.name} is listed with an implausible size ${f.size}`);
  }
  // A zombie has only its core; whether a task is one, its (checked) core
  // says, and a live task's other images are then required when read.
  const want = inv.preDump
    ? inv.pids.flatMap((p) => [pagemapName(p), pagesName(p)])
    : [FILES, ...inv.pids.map(coreName)];
  for (const w of want) if (!names.has(w)) fail(file, `does not list ${w}: incomplete dump`);
}

/** Every file entry: known kind, its details present, bounded strings and
 * contents, unique ids. */
export function validateFiles(dir: string, img: FilesImage): Map<number, FileEntry> {
  const file = `${dir}/${FILES}`;
  count(file, "file entries", img.files.length, LIMITS.files);
  const byId = new Map<number, FileEntry>();
  for (const f of img.files) {
    // One closure, its message made only on failure: ten thousand entries.
    const failHere = (why: string) => fail(file, `file #${f.id}: ${why}`);
    if (f.id === 0 || byId.has(f.id)) failHere("id is zero or repeated");
    byId.set(f.id, f);
    const kind = kindOf(f) ?? failHere(`unknown file kind ${f.kind}`);
    kind.validate(f, failHere);
    if (f.locks.length) validateLocks(f.locks, failHere);
  }
  return byId;
}

/** One task's core, mm, pagemap and fd table, against the files and the
 * pages file's real size. */
export function validateTask(
  dir: string,
  pid: number,
  t: TaskImages,
  files: Map<number, FileEntry>,
  pagesSize: (part: number) => bigint,
): void {
  const core = `${dir}/${coreName(pid)}`;
  if (t.core.zombie) {
    if (t.core.pid !== pid) fail(core, `holds pid ${t.core.pid}, expected ${pid}`);
    if (!isPid(t.core.ppid)) fail(core, `parent pid ${t.core.ppid} out of range`);
    return;
  }
  if (!t.mm || !t.pagemap || !t.fdTable) {
    fail(core, "a live task needs its mm, pagemap and fdinfo images");
  }
  validateCore(core, pid, t.core, files);
  validateMm(`${dir}/${mmName(pid)}`, pid, t.mm, files);
  validatePagemap(`${dir}/${pagemapName(pid)}`, pid, t.pagemap, t.mm, pagesSize);
  validateFds(`${dir}/${fdName(pid)}`, pid, t.fdTable, files);
}

function validateCore(file: string, pid: number, c: TaskCore, files: Map<number, FileEntry>) {
  if (c.pid !== pid) fail(file, `holds pid ${c.pid}, expected ${pid}`);
  if (c.ppid < 0 || c.ppid > LIMITS.pidMax || c.pgid < 0 || c.pgid > LIMITS.pidMax) {
    fail(file, `parent or group pid out of range`);
  }
  if (!isPid(c.sid) && c.sid !== 0) fail(file, `session ${c.sid} out of range`);
  count(file, "threads", c.threads.length, LIMITS.threads, 1);
  const tids = new Set<number>();
  for (const t of c.threads) {
    if (!isPid(t.tid) || tids.has(t.tid)) fail(file, `thread id ${t.tid} is invalid or repeated`);
    tids.add(t.tid);
    if (t.regs.length !== LIMITS.regs) {
      fail(file, `thread ${t.tid}: registers are ${t.regs.length} bytes, not ${LIMITS.regs}`);
    }
    if (t.xsave.length < LIMITS.xsaveMin || t.xsave.length > LIMITS.xsaveMax) {
      fail(file, `thread ${t.tid}: XSAVE area of ${t.xsave.length} bytes is out of bounds`);
    }
    count(file, `pending signals of thread ${t.tid}`, t.pending.length, LIMITS.queuedSignals);
    for (const s of t.pending) checkSignal(file, s.signo, s.siginfo.length);
    if (t.comm.length > LIMITS.comm) fail(file, `thread ${t.tid}: name too long`);
    const action = t.syscall?.action ?? "none";
    if (!["none", "restart", "eintr", "reenter", ""].includes(action)) {
      fail(file, `thread ${t.tid}: unknown syscall action ${JSON.stringify(action.slice(0, 20))}`);
    }
    if (action === "reenter" && (t.syscall!.nr < 0n || t.syscall!.remainingNs < -1n)) {
      fail(file, `thread ${t.tid}: a wait to enter again needs its call and a time left`);
    }
    if (t.creds) {
      if (t.creds.uids.length !== 4 || t.creds.gids.length !== 4) {
        fail(file, `thread ${t.tid}: credentials need 4 uids and gids`);
      }
      count(file, `supplementary groups of thread ${t.tid}`, t.creds.groups.length, LIMITS.groups);
    }
    if (t.seccompMode > 2) fail(file, `thread ${t.tid}: unknown seccomp mode ${t.seccompMode}`);
    if ((t.seccompMode === 2) !== (t.seccompFilter !== 0)) {
      fail(file, `thread ${t.tid}: seccomp filter mode and filter disagree`);
    }
    if (t.seccompFilter > c.seccompFilters.length) {
      fail(file, `thread ${t.tid}: seccomp filter ${t.seccompFilter} does not exist`);
    }
  }
  if (!tids.has(pid)) fail(file, `no thread has the task's own id ${pid}`);
  count(file, "seccomp filters", c.seccompFilters.length, LIMITS.seccompFilters);
  c.seccompFilters.forEach((f, i) => {
    // Ids are 1..n in order, each on an earlier one: the tree has no cycle.
    if (f.id !== i + 1 || f.parent >= f.id) fail(file, `seccomp filter ${f.id} is out of order`);
    const n = f.insns.length / 8;
    if (!Number.isInteger(n) || n < 1 || n > LIMITS.seccompInsns) {
      fail(file, `seccomp filter ${f.id} has ${f.insns.length} bytes, not 1 to 4096 instructions`);
    }
  });
  count(file, "signal handlers", c.sigactions.length, 64);
  const signos = new Set<number>();
  for (const a of c.sigactions) {
    if (a.signo < 1 || a.signo > 64 || signos.has(a.signo)) {
      fail(file, `signal handler for signal ${a.signo} is invalid or repeated`);
    }
    signos.add(a.signo);
  }
  count(file, "shared pending signals", c.sharedPending.length, LIMITS.queuedSignals);
  for (const s of c.sharedPending) checkSignal(file, s.signo, s.siginfo.length);
  count(file, "interval timers", c.itimers.length, 3);
  for (const it of c.itimers) {
    if (it.which > 2) fail(file, `interval timer ${it.which} does not exist`);
    for (const us of [it.intervalUsec, it.valueUsec]) {
      if (us < 0n || us > 999_999n) fail(file, `interval timer microseconds ${us} out of range`);
    }
    if (it.intervalSec < 0n || it.valueSec < 0n) fail(file, `negative interval timer`);
  }
  count(file, "resource limits", c.rlimits.length, LIMITS.rlimits);
  for (const l of c.rlimits) {
    if (l.resource >= LIMITS.rlimits) fail(file, `resource limit ${l.resource} does not exist`);
    if (l.cur > l.max) fail(file, `resource limit ${l.resource}: soft above hard`);
  }
  const cr = c.creds ?? fail(file, "credentials missing");
  if (cr.uids.length !== 4 || cr.gids.length !== 4) fail(file, "credentials need 4 uids and gids");
  count(file, "supplementary groups", cr.groups.length, LIMITS.groups);
  const mm = c.mm ?? fail(file, "mm fields missing");
  if (mm.auxv.length > LIMITS.auxv || mm.auxv.length % 16 !== 0) {
    fail(file, `auxv of ${mm.auxv.length} bytes is out of bounds`);
  }
  if (c.exitSignal < 0 || c.exitSignal > 64 || c.pdeathsig < 0 || c.pdeathsig > 64) {
    fail(file, "exit or parent-death signal out of range");
  }
  if (c.comm.length > LIMITS.comm || c.exe.length > LIMITS.path) fail(file, "name too long");
  for (const [what, id] of [["cwd", c.cwdFileId], ["root", c.rootFileId]] as const) {
    const f = files.get(id);
    if (!f || f.kind !== FileKind.FILE_DIR) fail(file, `${what} refers to no directory (#${id})`);
  }
  if (mm.exeFileId !== 0 && files.get(mm.exeFileId)?.kind !== FileKind.FILE_REG) {
    fail(file, `executable refers to no regular file (#${mm.exeFileId})`);
  }
  validatePosixTimers(c, (why) => fail(file, why));
  if (!(c.mlockFuture in MlockMode)) fail(file, `unknown mlockall mode ${c.mlockFuture}`);
}

function checkSignal(file: string, signo: number, infoLen: number): void {
  if (signo < 1 || signo > 64) fail(file, `queued signal ${signo} does not exist`);
  if (infoLen !== LIMITS.siginfo) fail(file, `siginfo of ${infoLen} bytes, not 128`);
}

function validateMm(file: string, pid: number, mm: MmImage, files: Map<number, FileEntry>) {
  if (mm.pid !== pid) fail(file, `holds pid ${mm.pid}, expected ${pid}`);
  count(file, "mappings", mm.vmas.length, LIMITS.vmas, 1);
  let prevEnd = 0n;
  for (const v of mm.vmas) {
    const at = `mapping at 0x${v.start.toString(16)}`;
    if (v.start % PAGE || v.end % PAGE || v.start >= v.end || v.pgoff % PAGE) {
      fail(file, `${at}: bounds not page aligned or empty`);
    }
    if (v.start < prevEnd) fail(file, `${at}: mappings unsorted or overlapping`);
    prevEnd = v.end;
    const vsyscall = v.kind === VmaKind.VMA_VSYSCALL;
    if (vsyscall ? v.start !== VSYSCALL : v.end > LIMITS.taskSize) {
      fail(file, `${at}: outside the user address space`);
    }
    if (!(v.kind in VmaKind) || v.prot > 7) fail(file, `${at}: unknown kind or protection`);
    if (v.name.length > LIMITS.path) fail(file, `${at}: name too long`);
    validateVmFlags(v, (why) => fail(file, `${at}: ${why}`));
    if (v.kind === VmaKind.VMA_SYSV_SHM) {
      const size = (v.shmemSize + PAGE - 1n) / PAGE * PAGE;
      if (size === 0n || v.pgoff + (v.end - v.start) > size || v.shmemId < 0) {
        fail(file, `${at}: System V segment ${v.shmemId} mapped beyond its size`);
      }
    }
    if (v.kind === VmaKind.VMA_FILE_PRIVATE || v.kind === VmaKind.VMA_FILE_SHARED) {
      const kind = files.get(v.fileId)?.kind;
      if (kind !== FileKind.FILE_REG && kind !== FileKind.FILE_UNLINKED) {
        fail(file, `${at}: refers to no regular file (#${v.fileId})`);
      }
    }
  }
}

/** Most pages files one task may have (one per copying thread). */
export const MAX_PARTS = 16;

/** Runs must tile their pages files exactly, in order, after each one's
 * header page, so every byte of them is covered by one checksum (runs
 * in_parent take no bytes); each must lie inside one mapping that takes
 * pages (when the mm is known: a pre-dump has none), in address order. */
export function validatePagemap(
  file: string,
  pid: number,
  pm: PagemapImage,
  mm: MmImage | undefined,
  pagesSize: (part: number) => bigint,
): void {
  if (pm.pid !== pid) fail(file, `holds pid ${pm.pid}, expected ${pid}`);
  if (pm.pagesFile !== pagesName(pid)) {
    fail(
      file,
      `names pages file ${JSON.stringify(pm.pagesFile.slice(0, 80))}, expected ${pagesName(pid)}`,
    );
  }
  const parts = Math.max(1, pm.parts);
  count(file, "pages files", parts, MAX_PARTS, 1);
  const sizes = [...Array(parts).keys()].map(pagesSize);
  const inParent = pm.runs.filter((r) => r.inParent).length;
  const room = sizes.reduce((a, sz) => a + Number((sz - PAGE) / PAGE) + 1, 0);
  count(file, "page runs", pm.runs.length - inParent, room);
  count(file, "page runs in the parent", inParent, Number(LIMITS.taskSize / PAGE / 2n));
  const off = sizes.map(() => PAGE);
  let prevEnd = 0n, vi = 0;
  const vmas = mm?.vmas;
  for (const r of pm.runs) {
    const at = `page run at 0x${r.vaddr.toString(16)}`;
    if (r.nrPages < 1n || r.vaddr % PAGE) fail(file, `${at}: empty or not page aligned`);
    const len = r.nrPages * PAGE;
    if (r.vaddr + len > LIMITS.taskSize) fail(file, `${at}: beyond the user address space`);
    if (r.inParent) {
      if (r.fileOffset !== 0n || r.part !== 0) {
        fail(file, `${at}: in the parent but has a file offset`);
      }
    } else {
      if (r.part >= parts) fail(file, `${at}: in pages file ${r.part} of ${parts}`);
      const name = pagesName(pid, r.part);
      if (r.fileOffset !== off[r.part]) {
        fail(
          file,
          `${at}: offset 0x${r.fileOffset.toString(16)} in ${name}, expected 0x${
            off[r.part].toString(16)
          }`,
        );
      }
      if (len > sizes[r.part] - off[r.part]) fail(file, `${at}: runs past the end of ${name}`);
      off[r.part] += len;
    }
    if (r.vaddr < prevEnd) fail(file, `${at}: runs unsorted or overlapping`);
    prevEnd = r.vaddr + len;
    if (!vmas) continue;
    while (vi < vmas.length && vmas[vi].end <= r.vaddr) vi++;
    const v = vmas[vi];
    if (!v || r.vaddr < v.start || r.vaddr + len > v.end) {
      fail(file, `${at}: outside every mapping`);
    }
    if (
      v.kind !== VmaKind.VMA_ANON_PRIVATE && v.kind !== VmaKind.VMA_ANON_SHARED &&
      v.kind !== VmaKind.VMA_FILE_PRIVATE
    ) fail(file, `${at}: mapping kind ${VmaKind[v.kind]} takes no pages`);
  }
  off.forEach((o, part) => {
    if (o !== sizes[part]) {
      fail(file, `runs cover ${o} bytes of ${pagesName(pid, part)}, which has ${sizes[part]}`);
    }
  });
}

function validateFds(file: string, pid: number, t: FdTable, files: Map<number, FileEntry>) {
  if (t.pid !== pid) fail(file, `holds pid ${t.pid}, expected ${pid}`);
  count(file, "fds", t.fds.length, LIMITS.fds);
  const seen = new Set<number>();
  for (const e of t.fds) {
    if (e.fd < 0 || e.fd >= LIMITS.fds || seen.has(e.fd)) {
      fail(file, `fd ${e.fd} invalid or repeated`);
    }
    seen.add(e.fd);
    if (!files.has(e.fileId)) fail(file, `fd ${e.fd} refers to no file (#${e.fileId})`);
  }
  validateLocks(t.locks, (why) => fail(file, why), seen);
}

/** Size of a task's pages file on disk (not following symlinks). */
export function pagesFileSize(dir: string, pid: number, part = 0): bigint {
  const path = `${dir}/${pagesName(pid, part)}`;
  try {
    return BigInt(Deno.lstatSync(path).size);
  } catch {
    throw new ImageError(path, "missing: the image directory is incomplete");
  }
}

/** Everything restore read, checked together: the one call restore makes
 * right after reading images. `tasks` holds every task of the inventory. */
export function validateImages(
  dir: string,
  inv: Inventory,
  filesImg: FilesImage,
  tasks: Map<number, TaskImages>,
  pagesSize: (pid: number, part: number) => bigint = (pid, part) => pagesFileSize(dir, pid, part),
): Map<number, FileEntry> {
  validateInventory(dir, inv);
  const files = validateFiles(dir, filesImg);
  for (const [pid, t] of tasks) {
    if (!inv.pids.includes(pid)) {
      throw new ImageError(`${dir}/${INVENTORY}`, `does not list task ${pid}`);
    }
    validateTask(dir, pid, t, files, (part) => pagesSize(pid, part));
  }
  return files;
}
