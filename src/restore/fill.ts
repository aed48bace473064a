// Filling a restored task's memory from ckpt: the restorer stops once every
// mapping exists, and ckpt copies the pages in with process_vm_writev from
// several worker threads at once, which one restorer thread cannot match.
import { ImageError } from "../errors.ts";
import { crc32cCombine } from "../images/crc32c.ts";
import { fillPagesCrc } from "../native/mod.ts";
import type { PageFill } from "./plan_buffer.ts";
import type { PagesSource } from "./drive.ts";

const PAGE = 4096n;
/** Below this a task fills its own memory: not worth the extra stop. */
export const EXTERNAL_FILL_MIN = 32n << 20n;

export function fillBytes(fills: PageFill[]): bigint {
  return fills.reduce((a, f) => a + f.len, 0n);
}

/** Splits the fills into `n` shares of about equal bytes, at page bounds;
 * each piece remembers the fill it came from. */
export function shareFills(fills: PageFill[], n: number): (PageFill & { owner: number })[][] {
  const per = (fillBytes(fills) / BigInt(n) + PAGE - 1n) / PAGE * PAGE;
  const shares: (PageFill & { owner: number })[][] = [[]];
  let room = per;
  fills.forEach((f, owner) => {
    let { addr, len, fileOff } = f;
    while (len > 0n) {
      if (room === 0n) {
        shares.push([]);
        room = per;
      }
      const take = len < room ? len : room;
      shares.at(-1)!.push({ addr, len: take, fileOff, owner });
      addr += take;
      fileOff += take;
      len -= take;
      room -= take;
    }
  });
  return shares.filter((s) => s.length);
}

/** Copies the fills into task pid, checking each against its CRC32C (when
 * it has one) on the way: a damaged run fails the restore before the task
 * ever runs, with the same message the up-front check gives. Fills from
 * other pages files (src k > 0) are read from others[k - 1]. */
export async function fillTask(
  pid: number,
  pagesFd: number,
  fills: PageFill[],
  pagesPath: string,
  others: PagesSource[] = [],
  workers = 2,
): Promise<void> {
  const bySource = new Map<number, number[]>();
  fills.forEach((f, i) => {
    const src = f.src ?? 0;
    bySource.set(src, [...bySource.get(src) ?? [], i]);
  });
  for (const [src, idx] of bySource) {
    const source = src === 0 ? { fd: pagesFd, path: pagesPath } : others[src - 1];
    const group = idx.map((i) => fills[i]);
    const got = await fillFrom(pid, source.fd, group, workers);
    group.forEach((f, k) => {
      if (f.crc !== undefined && got[k] !== f.crc) {
        throw new ImageError(
          source.path,
          `checksum mismatch in the run at offset 0x${f.fileOff.toString(16)} (vaddr 0x${
            f.addr.toString(16)
          }, ${f.len / PAGE} pages): the image is damaged`,
        );
      }
    });
  }
}

/** Copies fills (in file order) from one pages file on `workers` threads;
 * returns the CRC32C of each fill's bytes. */
async function fillFrom(
  pid: number,
  fd: number,
  fills: PageFill[],
  workers: number,
): Promise<(number | undefined)[]> {
  const shares = shareFills(fills, workers);
  const crcs = await Promise.all(shares.map((share) => {
    const triples = new BigUint64Array(share.length * 3);
    share.forEach((f, i) => triples.set([f.addr, f.len, f.fileOff], i * 3));
    const first = share[0].fileOff / PAGE * PAGE;
    const last = share.at(-1)!;
    return fillPagesCrc(pid, fd, triples, first, last.fileOff + last.len - first);
  }));
  const got = new Array<number | undefined>(fills.length);
  shares.forEach((share, si) =>
    share.forEach((piece, k) => {
      const prev = got[piece.owner];
      got[piece.owner] = prev === undefined
        ? crcs[si][k]
        : crc32cCombine(prev, crcs[si][k], piece.len);
    })
  );
  return got;
}
