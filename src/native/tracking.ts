// Typed wrappers for ffi/tracking.zig: PAGEMAP_SCAN and userfaultfd
// asynchronous write-protect tracking.
import { native } from "./load.ts";
import { check } from "./mod.ts";

export const PAGE_IS = {
  WPALLOWED: 1n << 0n,
  WRITTEN: 1n << 1n,
  FILE: 1n << 2n,
  PRESENT: 1n << 3n,
  SWAPPED: 1n << 4n,
  PFNZERO: 1n << 5n,
} as const;

export const PM_SCAN_WP_MATCHING = 1n;

export interface ScanQuery {
  flags?: bigint;
  inverted?: bigint;
  /** Every one of these must match. */
  all?: bigint;
  /** At least one of these must match. */
  anyOf?: bigint;
  /** Categories reported (regions merge where these agree). */
  report?: bigint;
}

/** A range of pages with the same reported categories. */
export interface Region {
  start: bigint;
  end: bigint;
  categories: bigint;
}

const VEC = 4096;
const vec = new BigUint64Array(VEC * 3);

/** Every region of [start, end) that matches q, in order, read from an open
 * /proc/PID/pagemap; `collect` false only applies the flags (write-protect). */
export function pagemapScan(
  pagemapFd: number,
  start: bigint,
  end: bigint,
  q: ScanQuery,
  collect = true,
): Region[] {
  const out: Region[] = [];
  const walkEnd = new BigUint64Array(1);
  let from = start;
  while (from < end) {
    const args = new BigUint64Array([
      q.flags ?? 0n,
      from,
      end,
      q.inverted ?? 0n,
      q.all ?? 0n,
      q.anyOf ?? 0n,
      q.report ?? 0n,
    ]);
    const n = check(
      native().ck_pagemap_scan(
        pagemapFd,
        new Uint8Array(args.buffer),
        collect ? new Uint8Array(vec.buffer) : null,
        collect ? BigInt(VEC) : 0n,
        new Uint8Array(walkEnd.buffer),
      ),
      "ioctl(PAGEMAP_SCAN)",
      `from 0x${from.toString(16)}`,
    );
    for (let i = 0; i < n; i++) {
      out.push({ start: vec[i * 3], end: vec[i * 3 + 1], categories: vec[i * 3 + 2] });
    }
    // Only a full vector cuts the walk short. walk_end is then where it
    // stopped; otherwise it can be stale (the kernel walks in chunks and
    // leaves the last chunk's value), so it is not trusted on its own.
    if (!collect || n < VEC) break;
    const last = vec[(n - 1) * 3 + 1];
    const next = walkEnd[0] > last ? walkEnd[0] : last;
    if (next <= from) break;
    from = next;
  }
  return out;
}

/** Enables asynchronous write-protect on a fresh userfaultfd. */
export function uffdWpAsync(uffd: number, what: string): void {
  check(native().ck_uffd_wp_async(uffd), "UFFDIO_API (UFFD_FEATURE_WP_ASYNC)", what);
}

/** Registers a range for write-protect tracking. */
export function uffdRegisterWp(uffd: number, start: bigint, len: bigint, what: string): void {
  check(native().ck_uffd_register_wp(uffd, start, len), "UFFDIO_REGISTER (write-protect)", what);
}
