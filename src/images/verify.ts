// Integrity of a whole images directory before restore forks anything: every
// file against the inventory's size and CRC32C, every image's framing and
// bounds (validate.ts), the pages file's header page, and every page run's
// CRC32C — so one flipped byte anywhere is a one-line error naming the file
// (and, in the pages file, the offset of the damaged run).
import { decodeMessage as fromBinary } from "./codec.ts";
import {
  type CgroupsImage,
  CgroupsImageSchema,
  FdTableSchema,
  type FileEntry,
  FilesImageSchema,
  type Inventory,
  InventorySchema,
  MmImageSchema,
  type NamespacesImage,
  NamespacesImageSchema,
  type PagemapImage,
  PagemapImageSchema,
  TaskCoreSchema,
} from "../gen/ckpt/images_pb.ts";
import { ImageError } from "../errors.ts";
import { crc32cNative, crc32cRanges } from "../native/integrity.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { log } from "../util/log.ts";
import { inParallel } from "../util/pool.ts";
import { crc32c, crc32cCombine } from "./crc32c.ts";
import {
  CGROUPS,
  coreName,
  fdName,
  FILES,
  INVENTORY,
  mmName,
  NAMESPACES,
  pagemapName,
  pagesName,
} from "./dir.ts";
import { validateNamespaces } from "../ns/validate.ts";
import { checkSets, validateCgroups } from "../cgroup/validate.ts";
import { decodeImage, ImageKind, PAGE_SIZE, pagesHeader } from "./format.ts";
import { type TaskImages, validateImages, validateInventory, validatePagemap } from "./validate.ts";

const PAGE = BigInt(PAGE_SIZE);

export interface ImageSet {
  inv: Inventory;
  files: Map<number, FileEntry>;
  tasks: Map<number, TaskImages>;
  /** namespaces.img, when the dump has one. */
  ns?: NamespacesImage;
  /** cgroups.img, when the dump has one. */
  cgroups?: CgroupsImage;
}

/** Where parseImageSet gets bytes from: the disk, or the fuzz test's memory. */
export interface ImageSource {
  /** Whole content of a non-pages file; throws ImageError when missing. */
  read(name: string): Uint8Array;
  /** Size of a file (the pages file is never read whole). */
  size(name: string): bigint;
  /** CRC32C of a whole file's bytes. */
  crc?(data: Uint8Array): number;
}

function decode<T>(
  dir: string,
  src: ImageSource,
  name: string,
  kind: ImageKind,
  parse: (b: Uint8Array) => T,
): T {
  const path = `${dir}/${name}`;
  const { payload } = decodeImage(path, src.read(name), kind);
  try {
    return parse(payload);
  } catch (err) {
    throw new ImageError(path, `undecodable payload: ${(err as Error).message}`);
  }
}

/** The inventory, decoded and bounds-checked first: its list drives what
 * is read next. */
function readInventory(dir: string, src: ImageSource): Inventory {
  const inv = decode(
    dir,
    src,
    INVENTORY,
    ImageKind.Inventory,
    (b) => fromBinary(InventorySchema, b),
  );
  validateInventory(dir, inv);
  return inv;
}

/** Decodes and checks every image except the pages' content: sizes and
 * CRC32Cs against the inventory, framing, bounds and cross references. */
export function parseImageSet(
  dir: string,
  src: ImageSource,
  /** Told how many files and fds the images hold once they are decoded,
   * before they are checked (restore grows its fd table meanwhile). */
  decoded?: (descriptors: number) => void,
): ImageSet {
  const inv = readInventory(dir, src);
  if (inv.preDump) {
    throw new ImageError(
      dir,
      "is a pre-dump: it holds memory only and is never restored on its own; restore the " +
        "dump made with --prev-images-dir pointing at it",
    );
  }
  checkListed(dir, inv, src);
  const filesImg = decode(dir, src, FILES, ImageKind.Files, (b) => fromBinary(FilesImageSchema, b));
  const tasks = new Map<number, TaskImages>();
  for (const pid of inv.pids) {
    const core = decode(
      dir,
      src,
      coreName(pid),
      ImageKind.Core,
      (b) => fromBinary(TaskCoreSchema, b),
    );
    if (core.zombie) {
      tasks.set(pid, { core });
      continue;
    }
    tasks.set(pid, {
      core,
      mm: decode(dir, src, mmName(pid), ImageKind.Mm, (b) => fromBinary(MmImageSchema, b)),
      pagemap: decode(
        dir,
        src,
        pagemapName(pid),
        ImageKind.Pagemap,
        (b) => fromBinary(PagemapImageSchema, b),
      ),
      fdTable: decode(
        dir,
        src,
        fdName(pid),
        ImageKind.FdTable,
        (b) => fromBinary(FdTableSchema, b),
      ),
    });
  }
  decoded?.(
    filesImg.files.length +
      [...tasks.values()].reduce((a, t) => a + (t.fdTable?.fds.length ?? 0), 0),
  );
  const files = validateImages(
    dir,
    inv,
    filesImg,
    tasks,
    (pid, part) => src.size(pagesName(pid, part)),
  );
  const ns = inv.files.some((f) => f.name === NAMESPACES)
    ? decode(
      dir,
      src,
      NAMESPACES,
      ImageKind.Namespaces,
      (b) => fromBinary(NamespacesImageSchema, b),
    )
    : undefined;
  if (ns) {
    validateNamespaces(ns, (why) => {
      throw new ImageError(`${dir}/${NAMESPACES}`, why);
    });
  }
  const cgroups = inv.files.some((f) => f.name === CGROUPS)
    ? decode(dir, src, CGROUPS, ImageKind.Cgroups, (b) => fromBinary(CgroupsImageSchema, b))
    : undefined;
  const cores = [...tasks.values()].map((t) => t.core);
  const bad = (why: string): never => {
    throw new ImageError(`${dir}/${CGROUPS}`, why);
  };
  if (cgroups) validateCgroups(cgroups, cores, bad);
  else checkSets(cores, 0, bad);
  return { inv, files, tasks, ns, cgroups };
}

/** Every file the inventory lists, against its size and (but for the pages
 * files, checked run by run) its CRC32C. */
function checkListed(dir: string, inv: Inventory, src: ImageSource): void {
  const sum = src.crc ?? crc32c;
  for (const f of inv.files) {
    const path = `${dir}/${f.name}`;
    const size = src.size(f.name);
    if (size !== f.size) {
      throw new ImageError(
        path,
        `${size} bytes where the inventory says ${f.size}: the image is truncated or damaged`,
      );
    }
    if (f.name.startsWith("pages-")) continue;
    const got = sum(src.read(f.name));
    if (got !== f.crc32c) {
      throw new ImageError(
        path,
        `checksum mismatch (CRC32C ${hex32(got)}, inventory says ${
          hex32(f.crc32c)
        }): the image is damaged`,
      );
    }
  }
}

/** What a pre-dump holds: each task's pagemap (bounds checked against its
 * pages file) and its inventory. The pages themselves are checked apart. */
export interface PreDumpSet {
  dir: string;
  inv: Inventory;
  pagemaps: Map<number, PagemapImage>;
}

export function parsePreDump(dir: string, src: ImageSource = diskSource(dir)): PreDumpSet {
  const inv = readInventory(dir, src);
  if (!inv.preDump) {
    throw new ImageError(
      dir,
      "is not a pre-dump (made by ckpt pre-dump); give a pre-dump's directory",
    );
  }
  checkListed(dir, inv, src);
  const pagemaps = new Map<number, PagemapImage>();
  for (const pid of inv.pids) {
    const pm = decode(
      dir,
      src,
      pagemapName(pid),
      ImageKind.Pagemap,
      (b) => fromBinary(PagemapImageSchema, b),
    );
    validatePagemap(
      `${dir}/${pagemapName(pid)}`,
      pid,
      pm,
      undefined,
      (part) => src.size(pagesName(pid, part)),
    );
    pagemaps.set(pid, pm);
  }
  return { dir, inv, pagemaps };
}

function hex32(n: number): string {
  return n.toString(16).padStart(8, "0");
}

/** Reads the directory: regular files only (never through a symlink). */
export function diskSource(dir: string): ImageSource {
  const cache = new Map<string, Uint8Array>();
  const stat = (name: string) => {
    const path = `${dir}/${name}`;
    let st: Deno.FileInfo;
    try {
      st = Deno.lstatSync(path);
    } catch {
      throw new ImageError(path, "missing: the image directory is incomplete");
    }
    if (!st.isFile) throw new ImageError(path, "not a regular file (a symlink or special file)");
    return st;
  };
  return {
    read(name) {
      const known = cache.get(name);
      if (known) return known;
      stat(name);
      const path = `${dir}/${name}`;
      let data: Uint8Array<ArrayBuffer>;
      try {
        data = Deno.readFileSync(path);
      } catch (err) {
        throw new ImageError(path, `cannot read: ${(err as Error).message}`);
      }
      cache.set(name, data);
      return data;
    },
    size: (name) => BigInt(stat(name).size),
    crc: (data) => crc32cNative(data as Uint8Array<ArrayBuffer>),
  };
}

/** The whole check restore runs before forking: parseImageSet from disk,
 * then each pages file's header page and every run's CRC32C — but for the
 * runs `deferRuns` marks (by index) for each task: those the restore checks
 * itself as it copies them in, saving a pass. */
export async function verifyImages(
  dir: string,
  deferRuns: (t: TaskImages) => boolean[] = () => [],
  decoded?: (descriptors: number) => void,
): Promise<ImageSet> {
  const t0 = performance.now();
  const set = parseImageSet(dir, diskSource(dir), decoded);
  // Small tasks are checked one thread each, two tasks at a time; a large
  // one takes both threads itself.
  await inParallel(
    [...set.tasks].map(([pid, t]) => ({
      weight: pagesBytes(t) >= SPLIT_MIN ? 2 : 1,
      run: () => verifyPages(dir, pid, t, deferRuns(t)),
    })),
    2,
  );
  log.debug(`images verified in ${(performance.now() - t0).toFixed(1)} ms`);
  return set;
}

/** Pieces no larger than this are checksummed on their own, so two threads
 * share even one huge run. */
const PIECE = 64n << 20n;

/** A task with less than this to check is checked by one thread. */
const SPLIT_MIN = 32n << 20n;

function pagesBytes(t: Pick<TaskImages, "pagemap">): bigint {
  return t.pagemap?.runs.reduce((a, r) => r.inParent ? a : a + r.nrPages * PAGE, 0n) ?? 0n;
}

export async function verifyPages(
  dir: string,
  pid: number,
  t: Pick<TaskImages, "pagemap">,
  defer: boolean[],
): Promise<void> {
  if (!t.pagemap) return; // a zombie has no memory
  const pagemap = t.pagemap;
  const parts = Math.max(1, pagemap.parts);
  const fds: number[] = [];
  try {
    for (let part = 0; part < parts; part++) {
      const path = `${dir}/${pagesName(pid, part)}`;
      fds.push(fdops.open(path, O.RDONLY | O.NOFOLLOW | O.CLOEXEC));
      const head = new Uint8Array(PAGE_SIZE);
      const n = fdops.pread(fds[part], head, 0);
      const want = pagesHeader();
      const bad = n < PAGE_SIZE ? n : want.findIndex((b, i) => head[i] !== b);
      if (bad >= 0) {
        throw new ImageError(
          path,
          `header page damaged at offset 0x${bad.toString(16)}: the image is damaged`,
        );
      }
    }
    // Runs kept in the parent images have no bytes here.
    const runs = pagemap.runs;
    defer = runs.map((r, i) => r.inParent || !!defer[i]);
    if (pagemap.runsCrc32c && runs.every((_, i) => defer[i])) return;
    if (!pagemap.runsCrc32c) {
      if (runs.length) {
        log.warn(
          `${dir}/${pagesName(pid)}: made by a ckpt without page checksums; memory is not verified`,
        );
      }
      return;
    }
    // Per pages file, pieces in file order; one large file is cut in two
    // halves so that two threads share it, several are one thread each.
    type Piece = { run: number; off: bigint; len: bigint };
    const byPart: Piece[][] = fds.map(() => []);
    runs.forEach((r, run) => {
      if (defer[run]) return;
      const end = r.fileOffset + r.nrPages * PAGE;
      for (let off = r.fileOffset; off < end; off += PIECE) {
        byPart[r.part].push({ run, off, len: end - off < PIECE ? end - off : PIECE });
      }
    });
    const jobs: { fd: number; pieces: Piece[] }[] = [];
    if (parts === 1 && pagesBytes(t) >= SPLIT_MIN) {
      const pieces = byPart[0];
      const total = pieces.reduce((a, p) => a + p.len, 0n);
      let cut = 0, acc = 0n;
      while (cut < pieces.length && acc * 2n < total) acc += pieces[cut++].len;
      jobs.push({ fd: fds[0], pieces: pieces.slice(0, cut) }, {
        fd: fds[0],
        pieces: pieces.slice(cut),
      });
    } else byPart.forEach((pieces, part) => jobs.push({ fd: fds[part], pieces }));
    const live = jobs.filter((j) => j.pieces.length);
    const crcs = await Promise.all(
      live.map((j) =>
        crc32cRanges(j.fd, new BigUint64Array(j.pieces.flatMap((p) => [p.off, p.len])))
      ),
    );
    const got = new Array<number>(runs.length);
    live.forEach((j, ji) =>
      j.pieces.forEach((p, i) => {
        const c = crcs[ji][i];
        got[p.run] = got[p.run] === undefined ? c : crc32cCombine(got[p.run], c, p.len);
      })
    );
    runs.forEach((r, i) => {
      if (!defer[i] && got[i] !== r.crc32c) {
        throw new ImageError(
          `${dir}/${pagesName(pid, r.part)}`,
          `checksum mismatch in the run at offset 0x${r.fileOffset.toString(16)} (vaddr 0x${
            r.vaddr.toString(16)
          }, ${r.nrPages} pages): the image is damaged`,
        );
      }
    });
  } finally {
    for (const fd of fds) fdops.close(fd);
  }
}
