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
import { dumpPagesCrc, fallocate } from "../native/integrity.ts";
import { NativeError } from "../native/mod.ts";
import { crc32cCombine } from "../images/crc32c.ts";
import { type MapsEntry, protOf, readMaps } from "../proc/maps.ts";
import { DumpError } from "../errors.ts";
import { PAGE_SIZE, pagesHeader } from "../images/format.ts";
import type { FileCollector } from "./files.ts";

const PAGE = BigInt(PAGE_SIZE);
const PM_PRESENT = 1n << 63n;
const PM_SWAP = 1n << 62n;
const PM_FILE = 1n << 61n;

const SPECIAL: Record<string, VmaKind> = {
  "[vdso]": VmaKind.VMA_VDSO,
  "[vvar]": VmaKind.VMA_VVAR,
  "[vvar_vclock]": VmaKind.VMA_VVAR_VCLOCK,
  "[vsyscall]": VmaKind.VMA_VSYSCALL,
};

function classify(pid: number, e: MapsEntry): VmaKind {
  const special = SPECIAL[e.name];
  if (special !== undefined) return special;
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
  if (e.name.startsWith("/dev/zero") || e.name.startsWith("/SYSV")) {
    if (e.name.startsWith("/SYSV")) {
      throw new DumpError(`pid ${pid}: System V shared memory (${e.name}) cannot be dumped yet`);
    }
    return VmaKind.VMA_ANON_SHARED;
  }
  if (e.name.endsWith(" (deleted)")) {
    throw new DumpError(
      `pid ${pid}: mapping of deleted file ${e.name} at 0x${
        e.start.toString(16)
      } cannot be dumped yet`,
    );
  }
  return e.shared ? VmaKind.VMA_FILE_SHARED : VmaKind.VMA_FILE_PRIVATE;
}

export interface MemoryDump {
  vmas: Vma[];
  runs: PageRun[];
  bytes: number;
}

/** Which pages of a mapping hold data the restored task needs from us. */
function wanted(kind: VmaKind, entry: bigint): boolean {
  if ((entry & (PM_PRESENT | PM_SWAP)) === 0n) return false;
  switch (kind) {
    case VmaKind.VMA_ANON_PRIVATE:
    case VmaKind.VMA_ANON_SHARED:
      return true;
    case VmaKind.VMA_FILE_PRIVATE:
      // Copied-on-write pages are anonymous; file pages come from the file.
      return (entry & PM_FILE) === 0n || (entry & PM_SWAP) !== 0n;
    default:
      return false;
  }
}

export function collectVmas(pid: number, files: FileCollector): Vma[] {
  return readMaps(pid).map((e) => {
    const kind = classify(pid, e);
    const isFile = kind === VmaKind.VMA_FILE_PRIVATE || kind === VmaKind.VMA_FILE_SHARED;
    const fileId = isFile
      ? files.addPath(
        FileKind.FILE_REG,
        e.name,
        `/proc/${pid}/map_files/${e.start.toString(16)}-${e.end.toString(16)}`,
      )
      : 0;
    return create(VmaSchema, {
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
  });
}

/** Pages of shared anonymous objects already saved by an earlier task, by
 * object (inode) and page index within it. */
export type SharedClaims = Map<number, Set<bigint>>;

/** Page runs to save, in address order, with their place in the pages file. */
export function planPages(
  pid: number,
  vmas: Vma[],
  claims: SharedClaims = new Map(),
  copy = pid,
): PageRun[] {
  // A frozen copy's page tables match the task's for private memory; fork
  // does not copy them for shared mappings, so those are read from the task.
  const pm = fdops.open(`/proc/${pid}/pagemap`, O.RDONLY | O.CLOEXEC);
  const cpm = copy === pid ? pm : fdops.open(`/proc/${copy}/pagemap`, O.RDONLY | O.CLOEXEC);
  const runs: PageRun[] = [];
  let fileOff = PAGE;
  try {
    for (const v of vmas) {
      if (
        v.kind !== VmaKind.VMA_ANON_PRIVATE && v.kind !== VmaKind.VMA_ANON_SHARED &&
        v.kind !== VmaKind.VMA_FILE_PRIVATE
      ) continue;
      const first = v.start / PAGE;
      const n = Number((v.end - v.start) / PAGE);
      const CHUNK = 65536;
      for (let i = 0; i < n; i += CHUNK) {
        const cnt = Math.min(CHUNK, n - i);
        const buf = new Uint8Array(cnt * 8);
        let got = 0;
        while (got < buf.length) {
          const src = v.kind === VmaKind.VMA_ANON_SHARED ? pm : cpm;
          const r = fdops.pread(src, buf.subarray(got), Number((first + BigInt(i)) * 8n) + got);
          if (r === 0) break;
          got += r;
        }
        const ents = new BigUint64Array(buf.buffer, 0, got / 8);
        let runStart = -1;
        const flush = (end: number) => {
          if (runStart < 0) return;
          const pages = end - runStart;
          const last = runs[runs.length - 1];
          const vaddr = (first + BigInt(i + runStart)) * PAGE;
          if (last && last.vaddr + last.nrPages * PAGE === vaddr) {
            last.nrPages += BigInt(pages);
          } else {
            runs.push(
              create(PageRunSchema, { vaddr, nrPages: BigInt(pages), fileOffset: fileOff }),
            );
          }
          fileOff += BigInt(pages) * PAGE;
          runStart = -1;
        };
        const claimed = v.kind === VmaKind.VMA_ANON_SHARED
          ? claimSet(claims, v.shmemId)
          : undefined;
        const objFirst = v.pgoff / PAGE + BigInt(i);
        for (let j = 0; j < ents.length; j++) {
          let want = wanted(v.kind, ents[j]);
          if (want && claimed) {
            const page = objFirst + BigInt(j);
            if (claimed.has(page)) want = false;
            else claimed.add(page);
          }
          if (want) {
            if (runStart < 0) runStart = j;
          } else flush(j);
        }
        flush(ents.length);
      }
    }
  } finally {
    fdops.close(pm);
    if (cpm !== pm) fdops.close(cpm);
  }
  // Runs never cross a VMA boundary (merging only joins adjacent VMAs of the
  // same task), which restore relies on to fill each mapping separately.
  return splitAtVmas(runs, vmas);
}

/** Longest run written at dump: lazy restore checks a run's CRC32C whole
 * before serving any page of it, so this bounds what a page fault can wait
 * for (about 0.1 ms to read and check 1 MiB). */
export const MAX_RUN_BYTES = 1n << 20n;

/** The runs cut into pieces of at most maxBytes (rounded down to pages),
 * each piece with its own place in the file, the pieces of a run back to
 * back, so writePages gives each its own CRC32C. */
export function capRuns(runs: PageRun[], maxBytes = MAX_RUN_BYTES): PageRun[] {
  const most = maxBytes / PAGE > 0n ? maxBytes / PAGE : 1n;
  const out: PageRun[] = [];
  for (const r of runs) {
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

function splitAtVmas(runs: PageRun[], vmas: Vma[]): PageRun[] {
  const out: PageRun[] = [];
  let vi = 0;
  for (const r of runs) {
    let addr = r.vaddr, left = r.nrPages * PAGE, off = r.fileOffset;
    while (left > 0n) {
      while (vmas[vi].end <= addr) vi++;
      const take = left < vmas[vi].end - addr ? left : vmas[vi].end - addr;
      out.push(create(PageRunSchema, { vaddr: addr, nrPages: take / PAGE, fileOffset: off }));
      addr += take;
      off += take;
      left -= take;
    }
  }
  return out;
}

/** Writes the pages file: the header page, then every run in order, by
 * `workers` threads each copying a contiguous share of the bytes. Fills in
 * each run's crc32c (pieces of a run copied by different threads are
 * checksummed apart and joined). */
export async function writePages(
  pid: number,
  runs: PageRun[],
  path: string,
  workers = 2,
): Promise<number> {
  const out = fdops.open(path, O.RDWR | O.CREAT | O.TRUNC | O.CLOEXEC, 0o600);
  const mem = fdops.open(`/proc/${pid}/mem`, O.RDONLY | O.CLOEXEC);
  try {
    fdops.writeAll(out, pagesHeader());
    const end = runs.length ? runs.at(-1)!.fileOffset + runs.at(-1)!.nrPages * PAGE : PAGE;
    fdops.ftruncate(out, Number(end));
    reserve(out, end, path);
    const shares = splitRuns(runs, workers);
    const done = await Promise.all(
      shares.map((s) =>
        s.pairs.length
          ? dumpPagesCrc(pid, mem, s.pairs, out, s.fileOff)
          : { bytes: 0, crcs: new Uint32Array() }
      ),
    );
    const seen = new Set<number>();
    shares.forEach((s, si) => {
      s.owner.forEach((ri, k) => {
        const crc = done[si].crcs[k];
        const r = runs[ri];
        r.crc32c = seen.has(ri) ? crc32cCombine(r.crc32c, crc, s.pairs[2 * k + 1]) : crc;
        seen.add(ri);
      });
    });
    return done.reduce((a, b) => a + b.bytes, 0);
  } finally {
    fdops.close(mem);
    fdops.close(out);
  }
}

/** Space for the whole pages file up front: the copy writes through a shared
 * mapping, where a full disk would only show as EFAULT halfway through. */
function reserve(fd: number, end: bigint, path: string): void {
  try {
    fallocate(fd, 0n, end, path);
  } catch (err) {
    if (err instanceof NativeError && err.errno === 28) {
      throw new DumpError(
        `${path}: no space left on the device for ${end} bytes of memory; nothing was saved`,
      );
    }
    throw err;
  }
}

/** Cuts the runs into n shares of about equal bytes (at page boundaries),
 * each an [addr, len] list with the file offset where it starts and, per
 * pair, the index of the run it belongs to (in order, so pieces join). */
function splitRuns(
  runs: PageRun[],
  n: number,
): { pairs: BigUint64Array<ArrayBuffer>; owner: number[]; fileOff: bigint }[] {
  const total = runs.reduce((a, r) => a + r.nrPages, 0n);
  const per = (total + BigInt(n) - 1n) / BigInt(n);
  const shares: { list: bigint[]; owner: number[]; fileOff: bigint }[] = [];
  let cur: { list: bigint[]; owner: number[]; fileOff: bigint } | undefined;
  let inShare = 0n;
  runs.forEach((r, ri) => {
    let addr = r.vaddr, pages = r.nrPages, off = r.fileOffset;
    while (pages > 0n) {
      if (!cur || inShare >= per) {
        cur = { list: [], owner: [], fileOff: off };
        shares.push(cur);
        inShare = 0n;
      }
      const take = pages < per - inShare ? pages : per - inShare;
      cur.list.push(addr, take * PAGE);
      cur.owner.push(ri);
      addr += take * PAGE;
      off += take * PAGE;
      pages -= take;
      inShare += take;
    }
  });
  return shares.map((s) => ({
    pairs: new BigUint64Array(s.list),
    owner: s.owner,
    fileOff: s.fileOff,
  }));
}
