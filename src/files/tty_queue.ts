// What a pseudo-terminal holds besides its settings: the bytes typed into
// the master that the slave side has not read (in the slave's line
// discipline, line by line in canonical mode) and the bytes written to the
// slave that the master side has not read. A terminal has no peek: dump
// reads them out while the tree is frozen and puts them back exactly (and
// restore puts them into the new pair the same way): input through TIOCSTI
// with echo, signals and input processing off and every special character
// escaped with VLNEXT, so each byte lands in the buffer as it was and each
// line ends as it did; output written to the slave with OPOST off (the
// master's own line discipline is always raw).
import { create } from "@bufbuild/protobuf";
import {
  type Termios,
  TermiosSchema,
  type TtyChunk,
  TtyChunkEnd,
  TtyChunkSchema,
} from "../gen/ckpt/images_pb.ts";
import { ERRNO, fd as fdops, NativeError } from "../native/mod.ts";
import { POLL, TIOC, tty } from "../native/tty.ts";
import { sleepSync } from "../util/sleep.ts";

export const IFLAG = { IXON: 0o2000, IUTF8: 0o40000 } as const;
export const OFLAG = { OPOST: 1 } as const;
export const LFLAG = {
  ISIG: 0o1,
  ICANON: 0o2,
  ECHO: 0o10,
  ECHOE: 0o20,
  ECHOK: 0o40,
  ECHONL: 0o100,
  ECHOCTL: 0o1000,
  ECHOPRT: 0o2000,
  ECHOKE: 0o4000,
  IEXTEN: 0o100000,
  EXTPROC: 0o200000,
} as const;
const CC = {
  VERASE: 2,
  VKILL: 3,
  VEOF: 4,
  VEOL: 11,
  VREPRINT: 12,
  VWERASE: 14,
  VLNEXT: 15,
  VEOL2: 16,
} as const;
const NCCS = 19;
const NL = 0x0a;

export function readTermios(n: number, what: string): Termios {
  const b = new Uint8Array(44);
  tty.ioctlBuf(n, TIOC.TCGETS2, b, what);
  const dv = new DataView(b.buffer);
  return create(TermiosSchema, {
    iflag: dv.getUint32(0, true),
    oflag: dv.getUint32(4, true),
    cflag: dv.getUint32(8, true),
    lflag: dv.getUint32(12, true),
    line: b[16],
    cc: b.slice(17, 17 + NCCS),
    ispeed: dv.getUint32(36, true),
    ospeed: dv.getUint32(40, true),
  });
}

export function writeTermios(n: number, t: Termios, what: string): void {
  const b = new Uint8Array(44);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, t.iflag, true);
  dv.setUint32(4, t.oflag, true);
  dv.setUint32(8, t.cflag, true);
  dv.setUint32(12, t.lflag, true);
  b[16] = t.line;
  b.set(t.cc.subarray(0, NCCS), 17);
  dv.setUint32(36, t.ispeed, true);
  dv.setUint32(40, t.ospeed, true);
  tty.ioctlBuf(n, TIOC.TCSETS2, b, what);
}

/** Canonical input processing as the line discipline applies it (EXTPROC
 * hands input over unprocessed). */
export const canonical = (t: Termios): boolean =>
  (t.lflag & LFLAG.ICANON) !== 0 && (t.lflag & LFLAG.EXTPROC) === 0;

const inq = (n: number, what: string) => tty.getInt(n, TIOC.FIONREAD, what);

/** read(2) of a non-blocking fd: the bytes, or undefined when none are there. */
function readSome(n: number, len: number): Uint8Array<ArrayBuffer> | undefined {
  const buf = new Uint8Array(len);
  try {
    return buf.subarray(0, fdops.read(n, buf));
  } catch (err) {
    if (err instanceof NativeError && err.errno === ERRNO.EAGAIN) return undefined;
    throw err;
  }
}

/** Whether more arrives within a few ms: bytes queued behind a full line
 * discipline buffer (4 KiB) are pushed in by a kernel worker once it has
 * room. Under a quarter of that read, nothing was held back. */
const more = (n: number, read: number) => read >= 1024 && (tty.wait(n, POLL.IN, 3) & POLL.IN) !== 0;

const join = (parts: Uint8Array[]): Uint8Array<ArrayBuffer> => {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

/** The output queue, read through the master (a copy of the task's own
 * description, so exactly what is readable is read: it never blocks), into
 * `parts` (kept by the caller even if this throws: it is put back). In
 * packet mode every read starts with a TIOCPKT_DATA byte. */
export function drainOutput(
  master: number,
  packet: boolean,
  what: string,
  parts: Uint8Array[],
): void {
  for (let read = 0;;) {
    const n = inq(master, what);
    if (n === 0) {
      if (!more(master, read) || inq(master, what) === 0) return;
      continue;
    }
    const buf = new Uint8Array(n + (packet ? 1 : 0));
    const len = fdops.read(master, buf);
    read += len;
    if (packet && buf[0] !== 0) {
      throw new Error(`${what}: a packet-mode status byte 0x${buf[0].toString(16)} was read`);
    }
    parts.push(buf.slice(packet ? 1 : 0, len));
  }
}

/** The input queue, read into `chunks` through a non-blocking slave
 * description of ckpt's own: in canonical mode each read gives one line (an
 * empty one for a line ended by VEOF alone), and the line being typed is
 * read by switching canonical mode off for that read and on again. */
export function drainInput(slave: number, t: Termios, what: string, chunks: TtyChunk[]): void {
  const canon = canonical(t);
  for (let read = 0;;) {
    const data = readSome(slave, 4096);
    // Non-canonical with VMIN 0 reads 0 bytes when empty; canonical, a line
    // ended by VEOF alone.
    if (data === undefined || (!canon && !data.length)) {
      if (!more(slave, read)) break;
      continue;
    }
    read += data.length;
    const last = chunks[chunks.length - 1];
    if (!canon && last) last.data = join([last.data, data]);
    else {chunks.push(
        create(TtyChunkSchema, { data, end: canon ? lineEnd(data, t) : TtyChunkEnd.TTY_RAW }),
      );}
  }
  if (!canon) return;
  writeTermios(slave, { ...t, lflag: t.lflag & ~LFLAG.ICANON }, what);
  const partial: Uint8Array[] = [];
  try {
    for (let data = readSome(slave, 4096); data?.length; data = readSome(slave, 4096)) {
      partial.push(data);
    }
  } finally {
    writeTermios(slave, t, what);
    if (partial.length) {
      chunks.push(create(TtyChunkSchema, { data: join(partial), end: TtyChunkEnd.TTY_PARTIAL }));
    }
  }
}

/** How a line read in canonical mode ended: with its delimiter as last
 * byte, or by VEOF (which read(2) does not return). */
function lineEnd(line: Uint8Array, t: Termios): TtyChunkEnd {
  const last = line[line.length - 1];
  if (last === undefined) return TtyChunkEnd.TTY_EOF;
  const eol = t.cc[CC.VEOL], eol2 = t.cc[CC.VEOL2];
  if (
    last === NL || (eol !== 0 && last === eol) ||
    (eol2 !== 0 && last === eol2 && (t.lflag & LFLAG.IEXTEN) !== 0)
  ) return TtyChunkEnd.TTY_LINE;
  return TtyChunkEnd.TTY_EOF;
}

/** Puts the queues into a pair: `slave` is a slave description of ckpt's
 * own, `t` the slave's settings, restored at the end. Whether anything was
 * put (and the settings changed on the way). */
export function refill(
  slave: number,
  t: Termios,
  input: TtyChunk[],
  output: Uint8Array,
  what: string,
): boolean {
  if (!input.length && !output.length) return false;
  const quiet = LFLAG.ISIG | LFLAG.ECHO | LFLAG.ECHOE | LFLAG.ECHOK | LFLAG.ECHONL |
    LFLAG.ECHOCTL | LFLAG.ECHOPRT | LFLAG.ECHOKE | LFLAG.IEXTEN;
  const base: Termios = {
    ...t,
    iflag: t.iflag & IFLAG.IUTF8,
    oflag: t.oflag & ~OFLAG.OPOST,
    lflag: t.lflag & ~quiet,
  };
  try {
    if (!canonical(t)) {
      writeTermios(slave, base, what);
      for (const c of input) tty.inject(slave, c.data.slice(), what);
    } else {
      for (const c of input) injectLine(slave, base, c, what);
      if (!input.length) writeTermios(slave, base, what);
    }
    writeOut(slave, output.slice(), what);
  } finally {
    writeTermios(slave, t, what);
  }
  return true;
}

/** One canonical chunk: only newline, VEOL (set to the line's delimiter),
 * VEOF and VLNEXT are special (erase, kill, reprint, werase disabled), and
 * a byte of the data that is special goes in after VLNEXT. */
function injectLine(slave: number, base: Termios, c: TtyChunk, what: string): void {
  const data = c.data;
  const delim = c.end === TtyChunkEnd.TTY_LINE ? data[data.length - 1] : undefined;
  const body = delim === undefined ? data : data.subarray(0, data.length - 1);
  const eof = [4, 5, 6].find((b) => b !== delim)!;
  const lnext = [0x16, 0x17, 0x18].find((b) => b !== delim && b !== eof)!;
  const cc = base.cc.slice();
  for (const i of [CC.VERASE, CC.VKILL, CC.VREPRINT, CC.VWERASE, CC.VEOL2]) cc[i] = 0;
  cc[CC.VEOL] = delim !== undefined && delim !== NL ? delim : 0;
  cc[CC.VEOF] = eof;
  cc[CC.VLNEXT] = lnext;
  writeTermios(slave, { ...base, lflag: base.lflag | LFLAG.IEXTEN, cc }, what);
  const special = new Set([NL, eof, lnext, cc[CC.VEOL]].filter((b) => b !== 0));
  const out: number[] = [];
  for (const b of body) {
    if (special.has(b)) out.push(lnext);
    out.push(b);
  }
  if (delim !== undefined) out.push(delim);
  else if (c.end === TtyChunkEnd.TTY_EOF) out.push(eof);
  tty.inject(slave, new Uint8Array(out), what);
}

/** Writes the output queue through the slave (it may have to wait for the
 * master's line discipline to take in what fills its buffers). */
function writeOut(slave: number, bytes: Uint8Array<ArrayBuffer>, what: string): void {
  let off = 0;
  for (let idle = 0; off < bytes.length;) {
    try {
      off += fdops.write(slave, bytes.subarray(off));
      idle = 0;
    } catch (err) {
      if (!(err instanceof NativeError && err.errno === ERRNO.EAGAIN)) throw err;
      if (++idle > 200) throw new Error(`${what}: the master does not take its queued output back`);
      tty.wait(slave, POLL.OUT, 10);
    }
  }
}

/** Whether the slave can be written: after the output queue is drained, a
 * slave that cannot is stopped (^S with IXON, or tcflow). */
export function stopped(slave: number): boolean {
  for (let i = 0; i < 10; i++) {
    if (tty.wait(slave, POLL.OUT, 2) & POLL.OUT) return false;
    sleepSync(1);
  }
  return true;
}
