// The memory half of the restore plan: how each dumped mapping is recreated
// (anonymous, from a file, from a memfd for shared anonymous memory), which
// page runs fill it, where [vvar]/[vdso] must move, and where the restorer
// itself can live without overlapping anything the task will have.
import {
  type FileEntry,
  FileKind,
  MlockMode,
  type PageRun,
  type Vma,
  VmaKind,
} from "../gen/ckpt/images_pb.ts";
import type { Piece } from "../images/chain.ts";
import { RestoreError } from "../errors.ts";
import { PAGE_SIZE } from "../images/format.ts";
import { fd as fdops } from "../native/mod.ts";
import { readMaps } from "../proc/maps.ts";
import { hex } from "../util/units.ts";
import type { PageFill, PlanVma, SpecialMove } from "./plan_buffer.ts";
import { type Authority, type CheckPolicy, expectOf, openForKernelAs } from "../files/authority.ts";
import { S_IF } from "../native/fsops.ts";
import { EXTERNAL_FILL_MIN } from "./fill.ts";
import { attachRange, type SysvAttach, sysvAttaches } from "../ns/sysv_vma.ts";

const PAGE = BigInt(PAGE_SIZE);
const MAP_SHARED = 1, MAP_PRIVATE = 2, MAP_ANONYMOUS = 0x20, MAP_GROWSDOWN = 0x100;
const PROT_WRITE = 2;
export const TASK_SIZE = 0x7ffffffff000n;

const SPECIAL_NAMES: Partial<Record<VmaKind, string>> = {
  [VmaKind.VMA_VVAR]: "[vvar]",
  [VmaKind.VMA_VVAR_VCLOCK]: "[vvar_vclock]",
  [VmaKind.VMA_VDSO]: "[vdso]",
};

export interface MemoryPlan {
  vmas: PlanVma[];
  fills: PageFill[];
  /** With lazy: the anonymous private memory's pages, served after the
   * task runs; `fills` keeps the rest. */
  lazyFills: PageFill[];
  specials: SpecialMove[];
  /** Every range the task will occupy, sorted, for choosing the region. */
  occupied: [bigint, bigint][];
  /** System V shared memory, attached again by the task itself. */
  sysv: SysvAttach[];
}

/** Per run: whether a lazy restore serves it after the task runs. Only
 * anonymous private memory can be: a private file mapping would show the
 * file's page to a fault instead of a missing one, and shared memory is one
 * object for every task that maps it. */
export function lazyRuns(vmas: Vma[], runs: { vaddr: bigint }[]): boolean[] {
  let vi = 0;
  return runs.map((r) => {
    while (vi < vmas.length && vmas[vi].end <= r.vaddr) vi++;
    const v = vmas[vi];
    // Locked memory is resident by contract: it is filled before the tree runs.
    return !!v && v.kind === VmaKind.VMA_ANON_PRIVATE && r.vaddr >= v.start &&
      v.mlock === MlockMode.MLOCK_NONE;
  });
}

/** Per run: whether the restore checks its CRC32C itself while copying it
 * in, so the check before forking can skip it: every lazily served run (the
 * page server checks it on first touch), and the rest when they make a fill
 * large enough for the fill workers (which check as they copy). */
export function checkedWhileCopying(vmas: Vma[], runs: PageRun[], lazy: boolean): boolean[] {
  const served = lazy ? lazyRuns(vmas, runs) : runs.map(() => false);
  const eager = runs.reduce((a, r, i) => served[i] ? a : a + r.nrPages * PAGE, 0n);
  return served.map((l) => l || eager >= EXTERNAL_FILL_MIN);
}

/** Opens the fds mappings need (files, memfds); `serviceFd` hands each one a
 * number in the service range and returns it. `objectFd` is ckpt's own fd
 * for a file entry that is an object (a memfd, a deleted file): the one its
 * fds were reopened from, so the mapping and the fds share it. */
export function planMemory(
  pid: number,
  vmas: Vma[],
  pieces: Piece[],
  files: Map<number, FileEntry>,
  access: { authority: Authority; policy: CheckPolicy },
  serviceFd: (parentFd: number) => number,
  shmem: SharedObjects,
  objectFd: (fileId: number, where: string) => number,
  lazy = false,
  late: {
    /** A copy of ckpt's fd for a task (a placeholder's copy gets its file). */
    dup: (n: number) => number;
    /** Opens now, or once the tree's mounts exist (OpenedFiles.later). */
    open: (fn: () => number) => number;
  } = { dup: (n) => fdops.dupAbove(n, 100), open: (fn) => fn() },
): MemoryPlan {
  const fileFds = new Map<string, number>();
  const fileFd = (v: Vma, write: boolean, shared: boolean): number => {
    const f = files.get(v.fileId);
    if (f?.kind === FileKind.FILE_UNLINKED) {
      const key = `#${v.fileId}`;
      let n = fileFds.get(key);
      if (n === undefined) {
        const own = objectFd(v.fileId, `pid ${pid}: mapping at ${hex(v.start)}`);
        fileFds.set(key, n = serviceFd(late.dup(own)));
      }
      return n;
    }
    const r = f?.reg;
    if (!r) {
      throw new RestoreError(
        `pid ${pid}: mapping at ${hex(v.start)} refers to a missing file entry`,
      );
    }
    const key = `${r.path}:${write}`;
    const known = fileFds.get(key);
    if (known !== undefined) return known;
    // The mapping's file, opened as the task (no symlinks; the very file on
    // the same machine; size and mtime unless --file-validation=none):
    // restoring over another file would mix old memory with new contents.
    const n = serviceFd(late.open(() =>
      openForKernelAs(
        access.authority,
        r.path,
        write,
        `pid ${pid}: mapped file`,
        { ...expectOf(r, S_IF.REG), mtimeNs: r.mtimeNs },
        access.policy,
        !shared,
      )
    ));
    fileFds.set(key, n);
    return n;
  };

  const out: MemoryPlan = {
    vmas: [],
    fills: [],
    lazyFills: [],
    specials: [],
    occupied: [],
    sysv: sysvAttaches(vmas.filter((v) => v.kind === VmaKind.VMA_SYSV_SHM)),
  };
  const filled = new Set<bigint>();
  const lazyVmas = new Set<bigint>();
  const served = lazy ? lazyRuns(vmas, pieces) : [];
  let vi = 0;
  for (const [i, r] of pieces.entries()) {
    while (vi < vmas.length && vmas[vi].end <= r.vaddr) vi++;
    const v = vmas[vi];
    const len = r.len;
    if (!v || r.vaddr < v.start || r.vaddr + len > v.end) {
      throw new RestoreError(`pid ${pid}: pages at ${hex(r.vaddr)} lie outside every mapping`);
    }
    const fill = { addr: r.vaddr, len, fileOff: r.fileOff, crc: r.crc, src: r.src };
    if (served[i]) {
      lazyVmas.add(v.start);
      out.lazyFills.push(fill);
    } else {
      filled.add(v.start);
      out.fills.push(fill);
    }
  }

  const specialsWanted: Vma[] = [];
  for (const v of vmas) {
    out.occupied.push([v.start, v.end]);
    const fill = filled.has(v.start);
    const base = {
      start: v.start,
      end: v.end,
      prot: v.prot,
      fill,
      lazy: lazyVmas.has(v.start),
      pgoff: 0n,
    };
    switch (v.kind) {
      case VmaKind.VMA_ANON_PRIVATE:
        out.vmas.push({
          ...base,
          mapFlags: MAP_PRIVATE | MAP_ANONYMOUS | (v.growsdown ? MAP_GROWSDOWN : 0),
          fd: -1,
        });
        break;
      case VmaKind.VMA_ANON_SHARED:
        out.vmas.push({
          ...base,
          mapFlags: MAP_SHARED,
          fd: serviceFd(fdops.dupAbove(shmem.fdFor(v), 100)),
          pgoff: v.pgoff,
        });
        break;
      case VmaKind.VMA_FILE_PRIVATE:
        out.vmas.push({
          ...base,
          mapFlags: MAP_PRIVATE,
          fd: fileFd(v, false, false),
          pgoff: v.pgoff,
        });
        break;
      case VmaKind.VMA_FILE_SHARED:
        out.vmas.push({
          ...base,
          mapFlags: MAP_SHARED,
          fd: fileFd(v, (v.prot & PROT_WRITE) !== 0, true),
          pgoff: v.pgoff,
        });
        break;
      case VmaKind.VMA_VSYSCALL:
        out.occupied.pop();
        break;
      case VmaKind.VMA_SYSV_SHM:
        break; // its whole attach is occupied, below

      default:
        specialsWanted.push(v);
    }
  }
  for (const a of out.sysv) out.occupied.push(attachRange(a));
  out.specials = planSpecials(pid, specialsWanted);
  out.occupied.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  return out;
}

/** One memfd per shared anonymous object of the tree, sized for every
 * mapping of it; each task that maps it gets a copy of the fd, and the task
 * that saved its pages fills it. */
export class SharedObjects {
  private readonly fds = new Map<number, number>();

  constructor(private readonly sizes: Map<number, bigint>) {}

  static of(allVmas: Vma[][]): SharedObjects {
    const sizes = new Map<number, bigint>();
    for (const vmas of allVmas) {
      for (const v of vmas) {
        if (v.kind !== VmaKind.VMA_ANON_SHARED) continue;
        const need = v.shmemSize > 0n ? v.shmemSize : v.pgoff + (v.end - v.start);
        if (need > (sizes.get(v.shmemId) ?? 0n)) sizes.set(v.shmemId, need);
      }
    }
    return new SharedObjects(sizes);
  }

  fdFor(v: Vma): number {
    let fd = this.fds.get(v.shmemId);
    if (fd === undefined) {
      fd = fdops.memfd(`ckpt-shmem-${v.shmemId}`, 1 /* MFD_CLOEXEC */);
      fdops.ftruncate(fd, Number(this.sizes.get(v.shmemId) ?? v.end - v.start));
      this.fds.set(v.shmemId, fd);
    }
    return fd;
  }

  closeAll(): void {
    for (const fd of this.fds.values()) fdops.close(fd);
    this.fds.clear();
  }
}

/** [vvar], [vvar_vclock] and [vdso] of this process — and so of the forked
 * child — moved to where the dumped task had them, in an order where no move
 * lands on a block that has not moved yet. */
function planSpecials(pid: number, wanted: Vma[]): SpecialMove[] {
  const current = new Map(
    readMaps("self").filter((m) => /^\[(vvar|vvar_vclock|vdso)\]$/.test(m.name)).map((
      m,
    ) => [m.name, m]),
  );
  const moves: SpecialMove[] = [];
  for (const v of wanted) {
    const name = SPECIAL_NAMES[v.kind]!;
    const cur = current.get(name);
    if (!cur || cur.end - cur.start !== v.end - v.start) {
      throw new RestoreError(
        `pid ${pid}: ${name} differs from the dump (this kernel's vdso layout changed); ` +
          `restore on the kernel the dump was made on`,
      );
    }
    moves.push({ cur: cur.start, len: cur.end - cur.start, new: v.start });
  }
  const ordered: SpecialMove[] = [];
  const pending = [...moves];
  while (pending.length) {
    const i = pending.findIndex((m) =>
      pending.every((o) => o === m || m.new + m.len <= o.cur || o.cur + o.len <= m.new)
    );
    if (i < 0) throw new RestoreError(`pid ${pid}: cannot order the vdso moves`);
    ordered.push(...pending.splice(i, 1));
  }
  // The restorer keeps these ranges; it wants them sorted by destination.
  return ordered;
}

/** Addresses where a region of `len` bytes overlaps none of `occupied`. */
export function regionHints(occupied: [bigint, bigint][], len: bigint, max = 64): bigint[] {
  const hints: bigint[] = [];
  let prev = 0x10000000n;
  const gaps: [bigint, bigint][] = [];
  for (const [s, e] of occupied) {
    if (s > prev) gaps.push([prev, s]);
    if (e > prev) prev = e;
  }
  if (TASK_SIZE > prev) gaps.push([prev, TASK_SIZE]);
  for (const [a, b] of gaps.reverse()) {
    if (b - a < len + 2n * PAGE) continue;
    hints.push(b - len - PAGE - ((b - len - PAGE) % PAGE));
    hints.push(a + PAGE);
    const mid = a + (b - a) / 2n;
    if (mid + len + PAGE < b) hints.push(mid - (mid % PAGE));
    if (hints.length >= max) break;
  }
  return hints.slice(0, max);
}
