// The page figures of CRIU's dump statistics, counted from what a dump
// planned: pages of the mappings whose pages are saved (scanned), of runs
// left in the parent images (skipped), and of runs written; private and
// shared anonymous memory apart, as CRIU counts them.
import { type PageRun, type Vma, VmaKind } from "../gen/ckpt/images_pb.ts";
import { PAGE_SIZE } from "../images/format.ts";
import { takesPages } from "./memory.ts";

export interface PageCounts {
  pages_scanned: number;
  pages_skipped_parent: number;
  pages_written: number;
  shpages_scanned: number;
  shpages_skipped_parent: number;
  shpages_written: number;
}

export function noPages(): PageCounts {
  return {
    pages_scanned: 0,
    pages_skipped_parent: 0,
    pages_written: 0,
    shpages_scanned: 0,
    shpages_skipped_parent: 0,
    shpages_written: 0,
  };
}

/** Adds one task's mappings and runs (both in address order) to `into`. */
export function countPages(into: PageCounts, vmas: Vma[], runs: PageRun[]): PageCounts {
  const page = BigInt(PAGE_SIZE);
  for (const v of vmas) {
    if (!takesPages(v.kind)) continue;
    const n = Number((v.end - v.start) / page);
    if (v.kind === VmaKind.VMA_ANON_SHARED) into.shpages_scanned += n;
    else into.pages_scanned += n;
  }
  let i = 0;
  for (const r of runs) {
    while (i < vmas.length && vmas[i].end <= r.vaddr) i++;
    const shared = vmas[i]?.kind === VmaKind.VMA_ANON_SHARED;
    const n = Number(r.nrPages);
    if (r.inParent) {
      if (shared) into.shpages_skipped_parent += n;
      else into.pages_skipped_parent += n;
    } else if (shared) into.shpages_written += n;
    else into.pages_written += n;
  }
  return into;
}
