// The on-disk framing of every image file: a 24-byte header — magic
// "CKPTIMG1", format version, image kind, payload length, CRC32C of the
// payload — then the protobuf payload. The pages file instead starts with a
// 4096-byte header page (magic "CKPTPAGE") so memory stays page aligned.
import { ImageError } from "../errors.ts";
import { crc32cOf as crc32c } from "../native/integrity.ts";

export const FORMAT_VERSION = 1;
export const HEADER_SIZE = 24;
export const PAGE_SIZE = 4096;
/** No single image may claim more than this (pages live in the pages file). */
export const MAX_PAYLOAD = 256 << 20;

const IMG_MAGIC = new TextEncoder().encode("CKPTIMG1");
const PAGES_MAGIC = new TextEncoder().encode("CKPTPAGE");

export enum ImageKind {
  Inventory = 1,
  Core = 2,
  Mm = 3,
  Pagemap = 4,
  Files = 5,
  FdTable = 6,
  Pages = 7,
  UnixSockets = 8,
  Namespaces = 9,
  Cgroups = 10,
}

export function kindName(k: number): string {
  return ImageKind[k] ?? `unknown kind ${k}`;
}

export function encodeImage(kind: ImageKind, payload: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  out.set(IMG_MAGIC, 0);
  const dv = new DataView(out.buffer);
  dv.setUint32(8, FORMAT_VERSION, true);
  dv.setUint32(12, kind, true);
  dv.setUint32(16, payload.length, true);
  dv.setUint32(20, crc32c(payload), true);
  out.set(payload, HEADER_SIZE);
  return out;
}

function magicIs(data: Uint8Array, magic: Uint8Array): boolean {
  return data.length >= magic.length && magic.every((b, i) => data[i] === b);
}

/** Which framing a file's first bytes announce, if any of ours. */
export function sniff(head: Uint8Array): "image" | "pages" | undefined {
  if (magicIs(head, IMG_MAGIC)) return "image";
  if (magicIs(head, PAGES_MAGIC)) return "pages";
  return undefined;
}

export interface DecodedHeader {
  kind: number;
  version: number;
  payload: Uint8Array;
}

/** Validates framing and checksum; `expect` also checks the kind. */
export function decodeImage(file: string, data: Uint8Array, expect?: ImageKind): DecodedHeader {
  if (magicIs(data, PAGES_MAGIC)) {
    return { kind: ImageKind.Pages, version: pagesVersion(file, data), payload: new Uint8Array() };
  }
  if (!magicIs(data, IMG_MAGIC)) throw new ImageError(file, "not a ckpt image (bad magic)");
  if (data.length < HEADER_SIZE) {
    throw new ImageError(file, `truncated header (${data.length} of ${HEADER_SIZE} bytes)`);
  }
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const version = dv.getUint32(8, true);
  const kind = dv.getUint32(12, true);
  const len = dv.getUint32(16, true);
  const crc = dv.getUint32(20, true);
  if (version > FORMAT_VERSION) {
    throw new ImageError(
      file,
      `image format version ${version} is newer than this ckpt understands (${FORMAT_VERSION}); use a newer ckpt`,
    );
  }
  if (version === 0) throw new ImageError(file, "image format version 0 is invalid");
  if (expect !== undefined && kind !== expect) {
    throw new ImageError(file, `expected a ${kindName(expect)} image, found ${kindName(kind)}`);
  }
  if (len > MAX_PAYLOAD) throw new ImageError(file, `payload length ${len} is implausible`);
  if (data.length < HEADER_SIZE + len) {
    throw new ImageError(
      file,
      `truncated: header says ${len} bytes, file has ${data.length - HEADER_SIZE}`,
    );
  }
  if (data.length > HEADER_SIZE + len) {
    throw new ImageError(
      file,
      `${data.length - HEADER_SIZE - len} unexpected bytes after the payload`,
    );
  }
  const payload = data.subarray(HEADER_SIZE, HEADER_SIZE + len);
  const got = crc32c(payload);
  if (got !== crc) {
    throw new ImageError(
      file,
      `checksum mismatch (CRC32C ${got.toString(16)} != ${crc.toString(16)}): the image is damaged`,
    );
  }
  return { kind, version, payload };
}

export function pagesHeader(): Uint8Array<ArrayBuffer> {
  const h = new Uint8Array(PAGE_SIZE);
  h.set(PAGES_MAGIC, 0);
  const dv = new DataView(h.buffer);
  dv.setUint32(8, FORMAT_VERSION, true);
  dv.setUint32(12, ImageKind.Pages, true);
  return h;
}

function pagesVersion(file: string, data: Uint8Array): number {
  if (data.length < 16) throw new ImageError(file, "truncated pages header");
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const version = dv.getUint32(8, true);
  if (version === 0 || version > FORMAT_VERSION) {
    throw new ImageError(file, `pages format version ${version} is not supported by this ckpt`);
  }
  return version;
}

/** Checks the 4096-byte header of a pages file read from its first bytes. */
export function checkPagesHeader(file: string, head: Uint8Array): void {
  if (!magicIs(head, PAGES_MAGIC)) throw new ImageError(file, "not a ckpt pages file (bad magic)");
  pagesVersion(file, head);
}
