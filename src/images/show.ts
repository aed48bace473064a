// `ckpt show`: images as JSON, like CRIU's crit. Every file is fully
// validated on the way (framing, checksum, kind against its name, payload),
// so show doubles as an integrity check; the pages file is only sized, never
// read, since it holds the memory of the task.
import { fromBinary, type JsonValue } from "@bufbuild/protobuf";
import { ImageError } from "../errors.ts";
import type { Inventory } from "../gen/ckpt/images_pb.ts";
import { ImageDir, pagesName } from "./dir.ts";
import {
  checkPagesHeader,
  decodeImage,
  HEADER_SIZE,
  ImageKind,
  kindName,
  MAX_PAYLOAD,
  PAGE_SIZE,
  sniff,
} from "./format.ts";
import { hex32, messageToJson } from "./json.ts";
import { crc32c } from "./crc32c.ts";
import { kindInfo, kindOfName, type NamedImage } from "./kinds.ts";
import { decodeStats, isStatsFile, statsJson } from "./criu_stats.ts";

/** A protobuf image: its header and its payload as JSON. */
export interface ShownMessage {
  file: string;
  kind: string;
  version: number;
  payload: JsonValue;
}

/** A pages file: how much memory it holds, never the memory. */
export interface ShownPages {
  file: string;
  kind: "Pages";
  version: number;
  /** File size in bytes, header page included. */
  size: number;
  /** Pages of memory after the header page. */
  pages: number;
}

export type ShownImage = ShownMessage | ShownPages;

/** The memory of one task, from its pagemap. */
export interface TaskPages {
  pid: number;
  pages_file: string;
  /** pages-PID.img and, for a large dump, pages-PID.1.img … */
  pages_files: number;
  runs: number;
  pages: number;
  bytes: number;
  /** Pages left in the parent images (--prev-images-dir). */
  in_parent_pages: number;
}

export interface ShownDir {
  dir: string;
  images: ShownImage[];
  tasks: TaskPages[];
}

export type ShowResult = ShownImage | ShownDir;

export async function showPath(path: string): Promise<ShowResult> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch {
    throw new ImageError(path, "no such file or directory");
  }
  return st.isDirectory ? await showDir(path) : await showFile(path);
}

/** `label` is how the file is named in the result (the bare name inside a dir). */
export async function showFile(path: string, label = path): Promise<ShownImage> {
  const expect = kindOfName(basename(path))?.kind;
  const { data, size } = await readImageFile(path);
  if (isStatsFile(data)) {
    // CRIU's stats-dump / stats-restore, shown as crit shows them.
    return { file: label, kind: "Stats", version: 0, payload: statsJson(decodeStats(path, data)) };
  }
  if (sniff(data) === "pages") return pagesSummary(path, label, data, size, expect);
  const { kind, version, payload } = decodeImage(path, data, expect);
  const info = kindInfo(kind);
  if (!info) {
    throw new ImageError(path, `unknown image kind ${kind} (written by a newer ckpt?)`);
  }
  if (kind === ImageKind.Pages) {
    throw new ImageError(path, "a Pages image must start with a pages header page");
  }
  if (!info.schema) {
    // A kind this ckpt knows by number but has no schema for yet.
    return {
      file: label,
      kind: kindName(kind),
      version,
      payload: { bytes: payload.length, crc32c: hex32(crc32c(payload)) },
    };
  }
  let msg;
  try {
    msg = fromBinary(info.schema, payload);
  } catch (err) {
    throw new ImageError(path, `undecodable ${kindName(kind)} payload: ${(err as Error).message}`);
  }
  return { file: label, kind: kindName(kind), version, payload: messageToJson(info.schema, msg) };
}

/** Reads a whole image, or only the header page of a pages file. */
async function readImageFile(path: string): Promise<{ data: Uint8Array; size: number }> {
  // Stat before opening: opening a FIFO would block.
  let st: Deno.FileInfo;
  let f: Deno.FsFile;
  try {
    st = await Deno.stat(path);
    if (!st.isFile) throw new ImageError(path, "not a regular file");
    f = await Deno.open(path);
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw new ImageError(path, `cannot open: ${(err as Error).message}`);
  }
  try {
    const { size } = st;
    if (size === 0) throw new ImageError(path, "empty file: not a ckpt image");
    const head = await readUpTo(f, Math.min(size, PAGE_SIZE));
    const what = sniff(head);
    if (what === "image" && size > HEADER_SIZE + MAX_PAYLOAD) {
      throw new ImageError(path, `${size} bytes is more than any ckpt image holds`);
    }
    if (what !== "image" || size === head.length) return { data: head, size };
    const all = new Uint8Array(size);
    all.set(head);
    all.set(await readUpTo(f, size - head.length), head.length);
    return { data: all, size };
  } finally {
    f.close();
  }
}

async function readUpTo(f: Deno.FsFile, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await f.read(buf.subarray(got));
    if (r === null) break;
    got += r;
  }
  return buf.subarray(0, got);
}

function pagesSummary(
  path: string,
  label: string,
  head: Uint8Array,
  size: number,
  expect: ImageKind | undefined,
): ShownPages {
  if (expect !== undefined && expect !== ImageKind.Pages) {
    throw new ImageError(path, `expected a ${kindName(expect)} image, found a pages file`);
  }
  if (size < PAGE_SIZE) {
    throw new ImageError(path, `truncated pages header (${size} of ${PAGE_SIZE} bytes)`);
  }
  checkPagesHeader(path, head);
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const kind = dv.getUint32(12, true);
  if (kind !== ImageKind.Pages) {
    throw new ImageError(path, `pages header names kind ${kindName(kind)}, not Pages`);
  }
  if (size % PAGE_SIZE !== 0) {
    throw new ImageError(path, `truncated: ${size} bytes is not a whole number of pages`);
  }
  return {
    file: label,
    kind: "Pages",
    version: dv.getUint32(8, true),
    size,
    pages: size / PAGE_SIZE - 1,
  };
}

export async function showDir(path: string): Promise<ShownDir> {
  const dir = ImageDir.open(path);
  const inventory = dir.readInventory();
  const names: string[] = [];
  for await (const e of Deno.readDir(path)) {
    if (e.isFile && e.name.endsWith(".img")) names.push(e.name);
  }
  const pidIndex = new Map(inventory.pids.map((p, i) => [p, i]));
  const keyed = names.map((name) => ({ name, named: kindOfName(name) }));
  keyed.sort((a, b) => compare(a.named, b.named, pidIndex) || a.name.localeCompare(b.name));
  const images: ShownImage[] = [];
  for (const { name } of keyed) images.push(await showFile(dir.file(name), name));
  // After each file's own checks, which say more precisely what is wrong.
  checkListed(dir, inventory, new Set(names));
  const tasks: TaskPages[] = [];
  for (const { named } of keyed) {
    if (named?.kind === ImageKind.Pagemap && named.pid !== undefined) {
      tasks.push(await taskPages(dir, named.pid));
    }
  }
  return { dir: path, images, tasks };
}

// Per-directory images first (inventory leading), then each task's images in
// inventory order, then names ckpt does not know.
function compare(
  a: NamedImage | undefined,
  b: NamedImage | undefined,
  pidIndex: Map<number, number>,
): number {
  if (!a || !b) return (a ? 0 : 1) - (b ? 0 : 1);
  const task = (n: NamedImage) =>
    n.pid === undefined ? -1 : pidIndex.get(n.pid) ?? pidIndex.size + n.pid;
  return task(a) - task(b) || a.order - b.order;
}

/** The inventory lists every other file with its size: all must be there. */
function checkListed(dir: ImageDir, inventory: Inventory, present: Set<string>): void {
  for (const f of inventory.files) {
    if (!present.has(f.name)) {
      throw new ImageError(dir.file(f.name), "missing: listed in the inventory but not present");
    }
    const size = Deno.statSync(dir.file(f.name)).size;
    if (BigInt(size) !== f.size) {
      throw new ImageError(
        dir.file(f.name),
        `size ${size} differs from the ${f.size} bytes the inventory recorded: the image is damaged`,
      );
    }
  }
}

async function taskPages(dir: ImageDir, pid: number): Promise<TaskPages> {
  const pagemap = dir.readPagemap(pid);
  const pagesFile = pagemap.pagesFile || pagesName(pid);
  if (pagesFile.includes("/")) {
    throw new ImageError(dir.file(`pagemap-${pid}.img`), `pages file '${pagesFile}' is not a name`);
  }
  const parts = Math.max(1, pagemap.parts);
  const ends = [...Array(parts)].map(() => BigInt(PAGE_SIZE));
  let pages = 0n, inParent = 0n;
  for (const run of pagemap.runs) {
    if (run.inParent) {
      inParent += run.nrPages;
      continue;
    }
    if (
      run.fileOffset % BigInt(PAGE_SIZE) !== 0n || run.fileOffset < BigInt(PAGE_SIZE) ||
      run.part >= parts
    ) {
      throw new ImageError(
        dir.file(`pagemap-${pid}.img`),
        `run at 0x${run.vaddr.toString(16)} has a bad pages file offset ${run.fileOffset}`,
      );
    }
    pages += run.nrPages;
    const runEnd = run.fileOffset + run.nrPages * BigInt(PAGE_SIZE);
    if (runEnd > ends[run.part]) ends[run.part] = runEnd;
  }
  for (const [part, end] of ends.entries()) {
    const name = part ? pagesName(pid, part) : pagesFile;
    let size: number;
    try {
      size = (await Deno.stat(dir.file(name))).size;
    } catch {
      throw new ImageError(dir.file(name), "missing: the pagemap refers to it");
    }
    if (BigInt(size) < end) {
      throw new ImageError(
        dir.file(name),
        `truncated: the pagemap needs ${end} bytes, the file has ${size}`,
      );
    }
  }
  return {
    pid,
    pages_file: pagesFile,
    pages_files: parts,
    runs: pagemap.runs.length,
    pages: Number(pages),
    bytes: Number(pages) * PAGE_SIZE,
    in_parent_pages: Number(inParent),
  };
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
