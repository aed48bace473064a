// CRIU's statistics files, `stats-dump` and `stats-restore`, in the images
// directory, in CRIU's own framing (what go-criu's stats reader and crit
// read: u32 IMG_SERVICE magic, u32 STATS magic, u32 payload length, little
// endian, then one stats_entry), so tools built for CRIU (podman's
// --print-stats, dashboards) read ckpt's. Not part of the images proper:
// not in the inventory, and never read by restore.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type dump_stats_entry,
  dump_stats_entrySchema,
  type restore_stats_entry,
  restore_stats_entrySchema,
  type stats_entry,
  stats_entrySchema,
} from "../gen/criu/stats_pb.ts";
import { ImageError } from "../errors.ts";
import { log } from "../util/log.ts";

export const STATS_DUMP = "stats-dump";
export const STATS_RESTORE = "stats-restore";
const IMG_SERVICE_MAGIC = 0x55105940;
const STATS_MAGIC = 0x57093306;

/** A dump's figures by CRIU's names (dump_stats_entry); times in µs. */
export interface DumpStats {
  freezing_time: number;
  frozen_time: number;
  memdump_time: number;
  memwrite_time: number;
  pages_scanned: number;
  pages_skipped_parent: number;
  pages_written: number;
  pages_lazy: number;
  shpages_scanned: number;
  shpages_skipped_parent: number;
  shpages_written: number;
}

/** A restore's figures by CRIU's names (restore_stats_entry). */
export interface RestoreStats {
  pages_compared: number;
  pages_skipped_cow: number;
  forking_time: number;
  restore_time: number;
  pages_restored: number;
}

/** Milliseconds (performance.now() differences) as CRIU's µs. */
export const us = (ms: number): number => Math.max(0, Math.round(ms * 1000));

export function isStatsFile(data: Uint8Array): boolean {
  if (data.length < 12) return false;
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  return dv.getUint32(0, true) === IMG_SERVICE_MAGIC && dv.getUint32(4, true) === STATS_MAGIC;
}

export function encodeStats(entry: stats_entry): Uint8Array<ArrayBuffer> {
  const payload = toBinary(stats_entrySchema, entry);
  const out = new Uint8Array(12 + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, IMG_SERVICE_MAGIC, true);
  dv.setUint32(4, STATS_MAGIC, true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, 12);
  return out;
}

export function decodeStats(path: string, data: Uint8Array): stats_entry {
  if (!isStatsFile(data)) throw new ImageError(path, "not a CRIU statistics file (bad magic)");
  const len = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(8, true);
  if (12 + len > data.length) throw new ImageError(path, "truncated statistics file");
  try {
    return fromBinary(stats_entrySchema, data.subarray(12, 12 + len));
  } catch (err) {
    throw new ImageError(path, `undecodable statistics: ${(err as Error).message}`);
  }
}

export function dumpEntry(s: DumpStats): dump_stats_entry {
  const big = (n: number) => BigInt(n);
  return create(dump_stats_entrySchema, {
    freezingTime: s.freezing_time,
    frozenTime: s.frozen_time,
    memdumpTime: s.memdump_time,
    memwriteTime: s.memwrite_time,
    pagesScanned: big(s.pages_scanned),
    pagesSkippedParent: big(s.pages_skipped_parent),
    pagesWritten: big(s.pages_written),
    pagesLazy: big(s.pages_lazy),
    shpagesScanned: big(s.shpages_scanned),
    shpagesSkippedParent: big(s.shpages_skipped_parent),
    shpagesWritten: big(s.shpages_written),
  });
}

export function restoreEntry(s: RestoreStats): restore_stats_entry {
  return create(restore_stats_entrySchema, {
    pagesCompared: BigInt(s.pages_compared),
    pagesSkippedCow: BigInt(s.pages_skipped_cow),
    forkingTime: s.forking_time,
    restoreTime: s.restore_time,
    pagesRestored: BigInt(s.pages_restored),
  });
}

/** Writes stats-dump (0600, replacing an earlier one); the dump does not
 * fail for it. */
export function writeDumpStats(dir: string, s: DumpStats): void {
  write(dir, STATS_DUMP, create(stats_entrySchema, { dump: dumpEntry(s) }));
}

/** Writes stats-restore into the images directory, as CRIU does; a
 * directory restore may not write to (read-only media) only costs a warning. */
export function writeRestoreStats(dir: string, s: RestoreStats): void {
  write(dir, STATS_RESTORE, create(stats_entrySchema, { restore: restoreEntry(s) }));
}

function write(dir: string, name: string, entry: stats_entry): void {
  const path = `${dir}/${name}`;
  try {
    const tmp = `${path}.tmp`;
    Deno.writeFileSync(tmp, encodeStats(entry), { mode: 0o600 });
    Deno.chmodSync(tmp, 0o600);
    Deno.renameSync(tmp, path);
  } catch (err) {
    log.warn(`${path}: statistics not written: ${(err as Error).message}`);
  }
}

/** The entry as plain JSON with CRIU's field names (like `crit show`). */
export function statsJson(entry: stats_entry): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  const plain = (m: dump_stats_entry | restore_stats_entry) => {
    const o: Record<string, number> = {};
    for (
      const f of m.$typeName === "criu.dump_stats_entry"
        ? dump_stats_entrySchema.fields
        : restore_stats_entrySchema.fields
    ) {
      const v = (m as unknown as Record<string, unknown>)[f.localName];
      o[f.name] = typeof v === "bigint" ? Number(v) : Number(v ?? 0);
    }
    return o;
  };
  if (entry.dump) out.dump = plain(entry.dump);
  if (entry.restore) out.restore = plain(entry.restore);
  return out;
}

const hexed = (n: number) => `${n} (0x${n.toString(16)})`;

/** The lines of --display-stats, in CRIU's order and words. */
export function dumpStatsLines(s: DumpStats): string[] {
  return [
    "Displaying dump stats:",
    `Freezing time: ${s.freezing_time} us`,
    `Frozen time: ${s.frozen_time} us`,
    `Memory dump time: ${s.memdump_time} us`,
    `Memory write time: ${s.memwrite_time} us`,
    `Memory pages scanned: ${hexed(s.pages_scanned)}`,
    `Memory pages skipped from parent dump: ${hexed(s.pages_skipped_parent)}`,
    `Memory pages written: ${hexed(s.pages_written)}`,
    `Lazy memory pages: ${hexed(s.pages_lazy)}`,
    `Shared memory pages scanned: ${hexed(s.shpages_scanned)}`,
    `Shared memory pages skipped from parent dump: ${hexed(s.shpages_skipped_parent)}`,
    `Shared memory pages written: ${hexed(s.shpages_written)}`,
  ];
}

export function restoreStatsLines(s: RestoreStats): string[] {
  return [
    "Displaying restore stats:",
    `Pages compared: ${hexed(s.pages_compared)}`,
    `Pages skipped COW: ${hexed(s.pages_skipped_cow)}`,
    `Pages restored: ${hexed(s.pages_restored)}`,
    `Restore time: ${s.restore_time} us`,
    `Forking time: ${s.forking_time} us`,
  ];
}
