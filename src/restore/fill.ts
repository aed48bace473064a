// Filling a restored task's memory from ckpt: the restorer stops once every
// mapping exists, and ckpt copies the pages in with process_vm_writev from
// several worker threads at once, which one restorer thread cannot match.
import { fillPages } from "../native/mod.ts";
import type { PageFill } from "./plan_buffer.ts";

const PAGE = 4096n;
/** Below this a task fills its own memory: not worth the extra stop. */
export const EXTERNAL_FILL_MIN = 32n << 20n;

export function fillBytes(fills: PageFill[]): bigint {
  return fills.reduce((a, f) => a + f.len, 0n);
}

/** Splits the fills into `n` shares of about equal bytes, at page bounds. */
export function shareFills(fills: PageFill[], n: number): PageFill[][] {
  const per = (fillBytes(fills) / BigInt(n) + PAGE - 1n) / PAGE * PAGE;
  const shares: PageFill[][] = [[]];
  let room = per;
  for (const f of fills) {
    let { addr, len, fileOff } = f;
    while (len > 0n) {
      if (room === 0n) {
        shares.push([]);
        room = per;
      }
      const take = len < room ? len : room;
      shares.at(-1)!.push({ addr, len: take, fileOff });
      addr += take;
      fileOff += take;
      len -= take;
      room -= take;
    }
  }
  return shares.filter((s) => s.length);
}

export async function fillTask(pid: number, pagesFd: number, fills: PageFill[], workers = 2) {
  await Promise.all(
    shareFills(fills, workers).map((share) => {
      const triples = new BigUint64Array(share.length * 3);
      share.forEach((f, i) => triples.set([f.addr, f.len, f.fileOff], i * 3));
      const first = share[0].fileOff / PAGE * PAGE;
      const last = share.at(-1)!;
      return fillPages(pid, pagesFd, triples, first, last.fileOff + last.len - first);
    }),
  );
}
