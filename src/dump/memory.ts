// A task's address space: every mapping as a Vma, and which pages must be
// saved — decided from /proc/PID/pagemap — streamed into the pages file.
import { create } from "@bufbuild/protobuf";
import {
  FileKind,
  type PageRun,
  PageRunSchema,
  type Vma,
  VmaKind,
  VmaSchema,
} from "../gen/ckpt/images_pb.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { dataExtents } from "../native/fsops.ts";
import { dumpPagesCrc } from "../native/integrity.ts";
import { NativeError } from "../native/mod.ts";
import { PAGE_IS, pagemapScan } from "../native/tracking.ts";
import { type MapsEntry, protOf, readMaps } from "../proc/maps.ts";
import { DumpError } from "../errors.ts";
import { PAGE_SIZE, pagesHeader } from "../images/format.ts";
import { BlockedDump, type Blocker, type FileCollector } from "../files/collect.ts";
import { applyVmFlags, readVmFlags, type SmapsFlags } from "../task/vma_flags.ts";
import { isSysvMapping, SysvMappings } from "../ns/sysv_vma.ts";

const PAGE = BigInt(PAGE_SIZE);

const SPECIAL: Record<string, VmaKind> = {
  "[vdso]": VmaKind.VMA_VDSO,
  "[vvar]": VmaKind.VMA_VVAR,
  "[vvar_vclock]": VmaKind.VMA_VVAR_VCLOCK,
  "[vsyscall]": VmaKind.VMA_VSYSCALL,
};

function classify(pid: number, e: MapsEntry): VmaKind {
  const special = SPECIAL[e.name];
  if (special !== undefined) return special;
  // Before the inode test: a segment's inode is its id, and 0 is one.
  if (isSysvMapping(e)) return VmaKind.VMA_SYSV_SHM;
  if (e.inode === 0) {
    if (e.shared) return VmaKind.VMA_ANON_SHARED;
    if (
      e.name === "" || e.name === "[heap]" || e.name === "[stack]" || e.name.startsWith("[anon:")
    ) {
      return VmaKind.VMA_ANON_PRIVATE;
    }
    throw new DumpError(
      `pid ${pid}: mapping ${e.name} at 0x${e.start.toString(16)} cannot be dumped`,
    );
  }
  if (e.name.startsWith("/dev/zero")) return VmaKind.VMA_ANON_SHARED;
  return e.shared ? VmaKind.VMA_FILE_SHARED : VmaKind.VMA_FILE_PRIVATE;
}

/** A mapping whose file may have no name left (a memfd, a deleted file):
 * it maps the object its fds share, not a path. */
function maybeUnlinked(e: MapsEntry): boolean {
  return e.name.startsWith("/memfd:") || e.name.endsWith(" (deleted)");
}

/** Categories PAGEMAP_SCAN reports for planning. */
const REPORT = PAGE_IS.PRESENT | PAGE_IS.SWAPPED | PAGE_IS.FILE | PAGE_IS.PFNZERO |
  PAGE_IS.WRITTEN | PAGE_IS.WPALLOWED;

/** Whether pages with these categories hold data the restored task needs
 * from us. The shared zero page reads as zeros without being saved. */
function wanted(kind: VmaKind, c: bigint): boolean {
  if ((c & (PAGE_IS.PRESENT | PAGE_IS.SWAPPED)) === 0n || (c & PAGE_IS.PFNZERO) !== 0n) {
    return false;
  }
  switch (kind) {
    case VmaKind.VMA_ANON_PRIVATE:
    case VmaKind.VMA_ANON_SHARED:
      return true;
    case VmaKind.VMA_FILE_PRIVATE:
      // Copied-on-write pages are anonymous; file pages come from the file.
      return (c & PAGE_IS.FILE) === 0n || (c & PAGE_IS.SWAPPED) !== 0n;
    default:
      return false;
  }
}

/** Kinds of mapping whose pages are saved. */
export function takesPages(kind: VmaKind): boolean {
  return kind === VmaKind.VMA_ANON_PRIVATE || kind === VmaKind.VMA_ANON_SHARED ||
    kind === VmaKind.VMA_FILE_PRIVATE;
}

/** Every mapping of pid; `flags` are its smaps VmFlags when already read
 * (collectTask reads them while its scratch page exists). Every mapping that
 * cannot be dumped is named, not just the first. */
export function collectVmas(
  pid: number,
  files: FileCollector,
  flags: SmapsFlags[] = readVmFlags(pid),
): Vma[] {
  const blocked: Blocker[] = [];
  const sysv = new SysvMappings(pid, flags);
  const vmas = readMaps(pid).flatMap((e) => {
    let kind: VmaKind;
    try {
      kind = classify(pid, e);
    } catch (err) {
      if (!(err instanceof DumpError)) throw err;
      blocked.push({ pid, kind: "memory mapping", message: err.message });
      return [];
    }
    if (kind === VmaKind.VMA_SYSV_SHM) {
      let fields;
      try {
        fields = sysv.fields(e);
      } catch (err) {
        if (!(err instanceof DumpError)) throw err;
        blocked.push({ pid, kind: "System V shared memory", message: err.message });
        return [];
      }
      const v = create(VmaSchema, {
        start: e.start,
        end: e.end,
        prot: protOf(e),
        kind,
        pgoff: e.offset,
        name: e.name,
        ...fields,
      });
      applyVmFlags(v, flags);
      return [v];
    }
    const isFile = kind === VmaKind.VMA_FILE_PRIVATE || kind === VmaKind.VMA_FILE_SHARED;
    const unlinked = isFile && maybeUnlinked(e) ? files.unlinkedMapping(pid, e) : undefined;
    const fileId = !isFile ? 0 : unlinked ?? files.addPath(
      FileKind.FILE_REG,
      e.name,
      `/proc/${pid}/map_files/${e.start.toString(16)}-${e.end.toString(16)}`,
    );
    const v = create(VmaSchema, {
      start: e.start,
      end: e.end,
      prot: protOf(e),
      kind,
      fileId,
      pgoff: isFile || kind === VmaKind.VMA_ANON_SHARED ? e.offset : 0n,
      name: e.name,
      growsdown: e.name === "[stack]",
      shmemId: kind === VmaKind.VMA_ANON_SHARED ? e.inode : 0,
      shmemSize: kind === VmaKind.VMA_ANON_SHARED ? e.offset + (e.end - e.start) : 0n,
    });
    applyVmFlags(v, flags);
    return v;
  });
  if (blocked.length) throw new BlockedDump(blocked);
  return vmas;
}

/** Whether any of the runs lies in v. */
export function hasRuns(v: Vma, runs: PageRun[]): boolean {
  return runs.some((r) => r.vaddr >= v.start && r.vaddr < v.end);
}

/** The address ranges of shared anonymous mapping v whose pages its object
 * holds (in memory or swapped), whichever task wrote them: its data extents,
 * the object opened through map_files. */
function sharedPages(pid: number, v: Vma): [bigint, bigint][] {
  const n = fdops.open(
    `/proc/${pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`,
    O.RDONLY | O.CLOEXEC,
  );
  try {
    const first = v.pgoff, last = v.pgoff + (v.end - v.start);
    return [...dataExtents(n, first, last)].map(([from, to]): [bigint, bigint] => {
      const up = (to + PAGE - 1n) / PAGE * PAGE;
      return [v.start + (from - from % PAGE) - first, v.start + (up < last ? up : last) - first];
    });
  } finally {
    fdops.close(n);
  }
}

/** Pages of shared anonymous objects already saved by an earlier task, by
 * object (inode) and page index within it. */
export type SharedClaims = Map<number, Set<bigint>>;

/** Address ranges (sorted, disjoint) whose pages the parent images hold. */
export type Coverage = [bigint, bigint][];

/** Page runs to save, in address order, with their place in the pages file;
 * read with PAGEMAP_SCAN from the task itself, so it must be frozen. With
 * `parent` (the task's memory is write-tracked since the parent images were
 * made), pages it has not written since and the parent holds become runs
 * marked in_parent, which take no room in the pages file. */
export function planPages(
  pid: number,
  vmas: Vma[],
  claims: SharedClaims = new Map(),
  parent?: Coverage,
): PageRun[] {
  const pm = fdops.open(`/proc/${pid}/pagemap`, O.RDONLY | O.CLOEXEC);
  const runs: PageRun[] = [];
  let fileOff = PAGE;
  // Runs never cross a VMA boundary (restore fills each mapping apart):
  // runs before `fence` belong to earlier mappings.
  let fence = 0;
  const add = (vaddr: bigint, end: bigint, inParent: boolean) => {
    const last = runs.length > fence ? runs.at(-1) : undefined;
    const pages = (end - vaddr) / PAGE;
    if (last && last.inParent === inParent && last.vaddr + last.nrPages * PAGE === vaddr) {
      last.nrPages += pages;
    } else {
      runs.push(
        create(PageRunSchema, {
          vaddr,
          nrPages: pages,
          fileOffset: inParent ? 0n : fileOff,
          inParent,
        }),
      );
    }
    if (!inParent) fileOff += pages * PAGE;
  };
  try {
    for (const v of vmas) {
      if (!takesPages(v.kind)) continue;
      fence = runs.length;
      if (v.kind === VmaKind.VMA_ANON_SHARED) {
        // The object's pages, not this task's page tables: one a task that
        // has exited had written (a PostgreSQL backend filling shared
        // buffers) is mapped by none of those left.
        for (const [a, b] of sharedPages(pid, v)) {
          unclaimed(claimSet(claims, v.shmemId), v, a, b, (x, y) => add(x, y, false));
        }
        continue;
      }
      const regions = pagemapScan(pm, v.start, v.end, {
        anyOf: PAGE_IS.PRESENT | PAGE_IS.SWAPPED,
        report: REPORT,
      });
      for (const r of regions) {
        if (!wanted(v.kind, r.categories)) continue;
        const unchanged = parent && (r.categories & PAGE_IS.WPALLOWED) !== 0n &&
          (r.categories & PAGE_IS.WRITTEN) === 0n;
        if (!unchanged) add(r.start, r.end, false);
        else if ((r.categories & PAGE_IS.PRESENT) !== 0n) {
          splitByCoverage(parent, r.start, r.end, add);
        } else {
          // Not present, not written since tracking began, and not in the
          // parent: the write-protect marker tracking left on a page that
          // had nothing to save (a file page never copied, an anonymous page
          // never touched) reads as swapped. A page really swapped out was
          // saved by the parent, so only its covered parts are wanted.
          splitByCoverage(parent, r.start, r.end, (a, b, inParent) => {
            if (inParent) add(a, b, true);
          });
        }
      }
    }
  } finally {
    fdops.close(pm);
  }
  return runs;
}

/** Longest run written at dump: lazy restore checks a run's CRC32C whole
 * before serving any page of it, so this bounds what a page fault can wait
 * for (about 0.3 ms to read and check 2 MiB, the page server's read size);
 * shorter would cost restore more runs to decode before the tree runs. */
export const MAX_RUN_BYTES = 2n << 20n;

/** The runs cut into pieces of at most maxBytes (rounded down to pages),
 * each piece with its own place in the file, the pieces of a run back to
 * back, so writePages gives each its own CRC32C. */
export function capRuns(runs: PageRun[], maxBytes = MAX_RUN_BYTES): PageRun[] {
  const most = maxBytes / PAGE > 0n ? maxBytes / PAGE : 1n;
  const out: PageRun[] = [];
  for (const r of runs) {
    // Runs in the parent hold nothing here to check.
    if (r.inParent) {
      out.push(r);
      continue;
    }
    for (let done = 0n; done < r.nrPages; done += most) {
      const pages = r.nrPages - done < most ? r.nrPages - done : most;
      out.push(create(PageRunSchema, {
        vaddr: r.vaddr + done * PAGE,
        nrPages: pages,
        fileOffset: r.fileOffset + done * PAGE,
      }));
    }
  }
  return out;
}

function claimSet(claims: SharedClaims, id: number): Set<bigint> {
  let set = claims.get(id);
  if (!set) claims.set(id, set = new Set());
  return set;
}

/** Calls add for the parts of [start, end) of shared object v not saved by
 * an earlier task, claiming them. */
function unclaimed(
  claimed: Set<bigint>,
  v: Vma,
  start: bigint,
  end: bigint,
  add: (a: bigint, b: bigint) => void,
): void {
  let from = -1n;
  for (let a = start; a < end; a += PAGE) {
    const page = v.pgoff / PAGE + (a - v.start) / PAGE;
    if (claimed.has(page)) {
      if (from >= 0n) add(from, a);
      from = -1n;
    } else {
      claimed.add(page);
      if (from < 0n) from = a;
    }
  }
  if (from >= 0n) add(from, end);
}

/** Calls add for the pieces of [start, end): in_parent where covered. */
function splitByCoverage(
  cov: Coverage,
  start: bigint,
  end: bigint,
  add: (a: bigint, b: bigint, inParent: boolean) => void,
): void {
  // First range that ends after start (binary search: coverage can be long).
  let lo = 0, hi = cov.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cov[mid][1] <= start) lo = mid + 1;
    else hi = mid;
  }
  let at = start;
  for (let i = lo; i < cov.length && at < end; i++) {
    const [cs, ce] = cov[i];
    if (cs >= end) break;
    if (cs > at) add(at, cs, false), at = cs;
    const stop = ce < end ? ce : end;
    add(at, stop, true);
    at = stop;
  }
  if (at < end) add(at, end, false);
}

/** Below this a task's pages go to one file (and its restorer reads them
 * itself); above, one file per copying thread, written in parallel (tmpfs
 * serialises writes to one file on its inode lock). */
export const PARALLEL_PAGES_MIN = 32n << 20n;

/** How many pages files the saved runs go to with `workers` threads. */
export function pageParts(runs: PageRun[], workers: number): number {
  const bytes = runs.reduce((a, r) => r.inParent ? a : a + r.nrPages * PAGE, 0n);
  if (Deno.env.get("CKPT_ONEFILE")) return 1;
  return workers > 1 && bytes >= PARALLEL_PAGES_MIN ? workers : 1;
}

/** Writes the pages files: each its header page, then its share of the runs
 * (contiguous, about equal bytes, whole runs), each file by its own thread.
 * Sets every saved run's part, fileOffset and crc32c. Returns the bytes. */
export async function writePages(
  pid: number,
  allRuns: PageRun[],
  parts: number,
  pathOf: (part: number) => string,
): Promise<number> {
  const runs = allRuns.filter((r) => !r.inParent);
  const total = runs.reduce((a, r) => a + r.nrPages * PAGE, 0n);
  const shares: PageRun[][] = [...Array(parts)].map(() => []);
  let acc = 0n;
  for (const r of runs) {
    const part = Math.min(parts - 1, Number(acc * BigInt(parts) / (total || 1n)));
    const share = shares[part];
    const prev = share.at(-1);
    r.part = part;
    r.fileOffset = prev ? prev.fileOffset + prev.nrPages * PAGE : PAGE;
    share.push(r);
    acc += r.nrPages * PAGE;
  }
  const mem = fdops.open(`/proc/${pid}/mem`, O.RDONLY | O.CLOEXEC);
  const outs: number[] = [];
  try {
    for (let part = 0; part < parts; part++) {
      const path = pathOf(part);
      outs.push(fdops.open(path, O.RDWR | O.CREAT | O.TRUNC | O.CLOEXEC, 0o600));
      fdops.writeAll(outs[part], pagesHeader());
    }
    // Each thread allocates its file's pages as it writes them (tmpfs then
    // allocates on both cores); a full disk fails that write with ENOSPC.
    const done = await Promise.all(shares.map((share, part) => {
      if (!share.length) return { bytes: 0, crcs: new Uint32Array() };
      const pairs = new BigUint64Array(share.flatMap((r) => [r.vaddr, r.nrPages * PAGE]));
      return dumpPagesCrc(pid, mem, pairs, outs[part], PAGE).catch((err) => {
        if (err instanceof NativeError && err.errno === 28) {
          const bytes = share.reduce((a, r) => a + r.nrPages * PAGE, PAGE);
          throw new DumpError(
            `${pathOf(part)}: no space left on the device for ${bytes} bytes of memory; ` +
              `nothing was saved`,
          );
        }
        throw err;
      });
    }));
    shares.forEach((share, part) => share.forEach((r, k) => r.crc32c = done[part].crcs[k]));
    return done.reduce((a, b) => a + b.bytes, 0);
  } finally {
    fdops.close(mem);
    for (const fd of outs) fdops.close(fd);
  }
}
