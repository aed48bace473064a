// An image directory as one byte stream, for `dump --stream | restore
// --stream` (e.g. over ssh) with no directory on either side to manage.
// Format: "CKPTSTRM", u32 version, then per file: u16 name length, name, u64
// size, the bytes, u32 CRC32C of the bytes; then u16 0 and "CKPTEND!". Every
// file is checked as it arrives; the images inside carry their own checks.
import { ImageError } from "../errors.ts";
import { crc32cNative } from "../native/integrity.ts";
import { Progress } from "../util/progress.ts";
import { INVENTORY } from "./dir.ts";

const MAGIC = new TextEncoder().encode("CKPTSTRM");
const END = new TextEncoder().encode("CKPTEND!");
const VERSION = 1;
const CHUNK = 4 << 20;
const NAME = /^[a-z]+(-\d+)?\.img$/;
const MAX_FILE = 1n << 40n;

function u(n: number, bytes: 2 | 4): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(bytes);
  const dv = new DataView(b.buffer);
  if (bytes === 2) dv.setUint16(0, n, true);
  else dv.setUint32(0, n, true);
  return b;
}

async function writeAll(w: WritableStreamDefaultWriter<Uint8Array>, b: Uint8Array) {
  await w.write(b);
}

/** Streams every file of dir (the inventory last, as it was written) to out. */
export async function writeStream(dir: string, out: WritableStream<Uint8Array>): Promise<number> {
  const names = [...Deno.readDirSync(dir)].filter((e) => e.isFile).map((e) => e.name)
    .sort((a, b) => (a === INVENTORY ? 1 : b === INVENTORY ? -1 : a.localeCompare(b)));
  const total = names.reduce((a, n) => a + Deno.statSync(`${dir}/${n}`).size, 0);
  const progress = new Progress("sending images", total);
  const w = out.getWriter();
  let sent = 0;
  try {
    await writeAll(w, MAGIC);
    await writeAll(w, u(VERSION, 4));
    for (const name of names) {
      const nameBytes = new TextEncoder().encode(name);
      const f = await Deno.open(`${dir}/${name}`);
      try {
        const size = (await f.stat()).size;
        const head = new Uint8Array(2 + nameBytes.length + 8);
        const dv = new DataView(head.buffer);
        dv.setUint16(0, nameBytes.length, true);
        head.set(nameBytes, 2);
        dv.setBigUint64(2 + nameBytes.length, BigInt(size), true);
        await writeAll(w, head);
        let crc = 0;
        const buf = new Uint8Array(CHUNK);
        for (let left = size; left > 0;) {
          const n = await f.read(buf.subarray(0, Math.min(CHUNK, left)));
          if (n === null) throw new ImageError(`${dir}/${name}`, "shrank while being sent");
          const part = buf.slice(0, n);
          crc = crc32cNative(part, crc);
          await writeAll(w, part);
          left -= n;
          sent += n;
          progress.update(sent);
        }
        await writeAll(w, u(crc, 4));
      } finally {
        f.close();
      }
    }
    await writeAll(w, u(0, 2));
    await writeAll(w, END);
  } finally {
    progress.done();
    await w.close().catch(() => {});
  }
  return sent;
}

/** Reads a stream into dir (created 0700), checking every file as it comes. */
export async function readStream(input: ReadableStream<Uint8Array>, dir: string): Promise<number> {
  const r = new Reader(input);
  const what = "the image stream";
  const magic = await r.take(8, what);
  if (!MAGIC.every((b, i) => magic[i] === b)) {
    throw new ImageError(what, "not a ckpt image stream (bad magic)");
  }
  const version = new DataView((await r.take(4, what)).buffer).getUint32(0, true);
  if (version !== VERSION) throw new ImageError(what, `stream version ${version} is not supported`);
  let received = 0;
  const progress = new Progress("receiving images", 0);
  for (;;) {
    const nameLen = new DataView((await r.take(2, what)).buffer).getUint16(0, true);
    if (nameLen === 0) break;
    if (nameLen > 64) throw new ImageError(what, `file name length ${nameLen} is implausible`);
    const name = new TextDecoder().decode(await r.take(nameLen, what));
    if (!NAME.test(name)) throw new ImageError(what, `unexpected file name '${name.slice(0, 40)}'`);
    const size = new DataView((await r.take(8, what)).buffer).getBigUint64(0, true);
    if (size > MAX_FILE) throw new ImageError(`${what}: ${name}`, `size ${size} is implausible`);
    const f = await Deno.open(`${dir}/${name}`, { write: true, createNew: true, mode: 0o600 });
    let crc = 0;
    try {
      for (let left = Number(size); left > 0;) {
        const part = await r.upTo(Math.min(CHUNK, left), `${what}: ${name}`);
        crc = crc32cNative(part, crc);
        let off = 0;
        while (off < part.length) off += await f.write(part.subarray(off));
        left -= part.length;
        received += part.length;
        progress.update(received);
      }
    } finally {
      f.close();
    }
    const want = new DataView((await r.take(4, `${what}: ${name}`)).buffer).getUint32(0, true);
    if (want !== crc) {
      throw new ImageError(
        `${what}: ${name}`,
        "checksum mismatch: the stream was damaged in transit",
      );
    }
  }
  const end = await r.take(8, what);
  if (!END.every((b, i) => end[i] === b)) throw new ImageError(what, "damaged end marker");
  progress.done();
  return received;
}

/** Exact-size reads over a byte stream. */
class Reader {
  private buf: Uint8Array = new Uint8Array(0);
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;

  constructor(input: ReadableStream<Uint8Array>) {
    this.reader = input.getReader();
  }

  private async fill(what: string): Promise<void> {
    const { value, done } = await this.reader.read();
    if (done || !value) throw new ImageError(what, "truncated: the stream ended early");
    const merged = new Uint8Array(this.buf.length + value.length);
    merged.set(this.buf);
    merged.set(value, this.buf.length);
    this.buf = merged;
  }

  async take(n: number, what: string): Promise<Uint8Array<ArrayBuffer>> {
    while (this.buf.length < n) await this.fill(what);
    const out = this.buf.slice(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Between 1 and n bytes: whatever is buffered, or the next chunk. */
  async upTo(n: number, what: string): Promise<Uint8Array<ArrayBuffer>> {
    if (this.buf.length === 0) {
      const { value, done } = await this.reader.read();
      if (done || !value) throw new ImageError(what, "truncated: the stream ended early");
      this.buf = value;
    }
    const out = this.buf.slice(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    return out;
  }
}
