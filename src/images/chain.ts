// Parent images. A dump made with --prev-images-dir marks the pages its task
// has not written since a pre-dump as in_parent; their bytes stay in that
// pre-dump, which may itself take some from the pre-dump before it.
import type { Inventory, PagemapImage, PageRun } from "../gen/ckpt/images_pb.ts";
import { ImageError } from "../errors.ts";
import { pagemapName } from "./dir.ts";
import { PAGE_SIZE } from "./format.ts";
import { parsePreDump, type PreDumpSet, verifyPages } from "./verify.ts";

export type { PreDumpSet };

const PAGE = BigInt(PAGE_SIZE);
/** Deeper chains are refused: each link costs restore a lookup per run. */
export const MAX_CHAIN = 32;

/** Where a directory's parent images are: `parent` as given, relative to
 * the directory itself unless absolute (CRIU's --prev-images-dir). */
export function parentPath(dir: string, parent: string): string {
  return parent.startsWith("/") ? parent : `${dir}/${parent}`;
}

function realPath(path: string, what: string): string {
  try {
    return Deno.realPathSync(path);
  } catch {
    throw new ImageError(path, `missing: ${what}`);
  }
}

/** Every pre-dump above dir, nearest first, each parsed and bounds-checked
 * (not its pages: see verifyChain). `trust`, when given, checks each parent
 * directory before anything is read from it and returns the path to read it
 * by (its real path). */
export function readChain(
  dir: string,
  inv: Pick<Inventory, "parent">,
  trust?: (dir: string) => string,
): PreDumpSet[] {
  const chain: PreDumpSet[] = [];
  const seen = new Set([realPath(dir, "the images directory")]);
  let cur = dir, parent = inv.parent;
  while (parent) {
    const p = parentPath(cur, parent);
    const real = realPath(p, `the parent images of ${cur} (--prev-images-dir) are gone`);
    if (seen.has(real)) throw new ImageError(p, "parent images lead back to themselves");
    if (chain.length >= MAX_CHAIN) {
      throw new ImageError(dir, `more than ${MAX_CHAIN} levels of parent images`);
    }
    seen.add(real);
    const set = parsePreDump(trust ? trust(p) : p);
    chain.push(set);
    cur = set.dir;
    parent = set.inv.parent;
  }
  return chain;
}

/** Every page run of every pre-dump in the chain against its CRC32C. */
export async function verifyChain(chain: PreDumpSet[]): Promise<void> {
  for (const set of chain) {
    for (const [pid, pagemap] of set.pagemaps) await verifyPages(set.dir, pid, { pagemap }, []);
  }
}

/** Address ranges whose pages a pagemap holds (itself or through its
 * parent), sorted and merged. */
export function coverage(pm: PagemapImage): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  for (const r of pm.runs) {
    const end = r.vaddr + r.nrPages * PAGE;
    const last = out.at(-1);
    if (last && last[1] === r.vaddr) last[1] = end;
    else out.push([r.vaddr, end]);
  }
  return out;
}

/** Bytes of memory and where they are: `src` numbers a pages file, as
 * sourceOf(level, part) says for part `part` of the task's own images
 * (level 0) or of the level-th pre-dump up the chain. `crc` is set when the
 * piece is one whole run as saved. */
export interface Piece {
  vaddr: bigint;
  len: bigint;
  fileOff: bigint;
  src: number;
  crc?: number;
}

export type SourceOf = (level: number, part: number) => number;

/** The task's runs with every in_parent run replaced by the pieces of the
 * chain that hold those addresses, in address order. */
export function resolveRuns(
  pid: number,
  runs: PageRun[],
  chain: PreDumpSet[],
  file: string,
  sourceOf: SourceOf,
  level = 0,
): Piece[] {
  const out: Piece[] = [];
  let above: Piece[] | undefined;
  let j = 0;
  for (const r of runs) {
    const len = r.nrPages * PAGE;
    if (!r.inParent) {
      out.push({
        vaddr: r.vaddr,
        len,
        fileOff: r.fileOffset,
        src: sourceOf(level, r.part),
        crc: r.crc32c,
      });
      continue;
    }
    const parent = chain[level];
    const at0 = `the run at 0x${r.vaddr.toString(16)} is marked in the parent`;
    if (!parent) throw new ImageError(file, `${at0}, but no parent images are named`);
    const pm = parent.pagemaps.get(pid);
    if (!pm) throw new ImageError(file, `${at0}, but ${parent.dir} has no pages of pid ${pid}`);
    above ??= resolveRuns(
      pid,
      pm.runs,
      chain,
      `${parent.dir}/${pagemapName(pid)}`,
      sourceOf,
      level + 1,
    );
    const end = r.vaddr + len;
    let at = r.vaddr;
    while (j < above.length && above[j].vaddr + above[j].len <= at) j++;
    for (let k = j; at < end; k++) {
      const p = above[k];
      if (!p || p.vaddr > at) {
        throw new ImageError(
          file,
          `pages at 0x${
            at.toString(16)
          } are marked in the parent, but ${parent.dir} does not hold them`,
        );
      }
      const pEnd = p.vaddr + p.len;
      const stop = end < pEnd ? end : pEnd;
      const whole = at === p.vaddr && stop === pEnd;
      out.push({
        vaddr: at,
        len: stop - at,
        fileOff: p.fileOff + (at - p.vaddr),
        src: p.src,
        crc: whole ? p.crc : undefined,
      });
      at = stop;
    }
  }
  return out;
}
