// Typed wrapper for ffi/fdtable.zig: a task's fds (link, fdinfo text, stat
// of the open file) read natively, many per call.
import type { DumpedFd } from "../files/kind.ts";
import { native } from "./load.ts";
import { check } from "./mod.ts";

/** One fd as read, as the file kinds see it (DumpedFd): its fdinfo text,
 * lines and description are made only when asked for (of ten thousand
 * sockets, none is). */
export class RawFd implements DumpedFd {
  /** Open file status flags, without O_CLOEXEC. */
  readonly flags: number;
  readonly cloexec: boolean;
  private text: string | undefined;
  private lines: Map<string, string> | undefined;

  constructor(
    readonly pid: number,
    readonly fd: number,
    /** 0, or the errno that stopped the read (ENOENT: closed meanwhile). */
    readonly errno: number,
    readonly link: string,
    /** fdinfo's "flags:", O_CLOEXEC included. */
    infoFlags: number,
    /** fdinfo's "pos:". */
    readonly pos: bigint,
    /** For a socket, made from its fdinfo: device, inode and mode only. */
    readonly st: Deno.FileInfo,
    /** The fdinfo text, or where it is in `buf`. */
    text: string | undefined,
    private readonly buf?: Uint8Array,
    private readonly at = 0,
    private readonly len = 0,
    /** Whether the fdinfo text has `lock:` lines (undefined: look). */
    readonly lockLines?: boolean,
  ) {
    this.flags = infoFlags & ~O_CLOEXEC;
    this.cloexec = (infoFlags & O_CLOEXEC) !== 0;
    this.text = text;
  }

  /** fd n of pid from its link, fdinfo text and stat. */
  static of(pid: number, n: number, link: string, text: string, st: Deno.FileInfo): RawFd {
    const flags = parseInt(infoField(text, "flags") ?? "0", 8);
    return new RawFd(pid, n, 0, link, flags, BigInt(infoField(text, "pos") ?? "0"), st, text);
  }

  /** The fdinfo text as read, undecoded (an epoll's is ten thousand lines). */
  infoBytes(): Uint8Array {
    return this.buf ? this.buf.subarray(this.at, this.at + this.len) : enc.encode(this.infoText);
  }

  get infoText(): string {
    return this.text ??= dec.decode(this.buf!.subarray(this.at, this.at + this.len));
  }

  get info(): Map<string, string> {
    if (!this.lines) {
      this.lines = new Map();
      for (const line of this.infoText.split("\n")) {
        const i = line.indexOf(":");
        if (i > 0 && !this.lines.has(line.slice(0, i))) {
          this.lines.set(line.slice(0, i), line.slice(i + 1).trim());
        }
      }
    }
    return this.lines;
  }

  get where(): string {
    return `fd ${this.fd} of pid ${this.pid} (${this.link})`;
  }
}

const O_CLOEXEC = 0o2000000;

/** The value of the first "key:" line of an fdinfo text. */
function infoField(text: string, key: string): string | undefined {
  const at = text.startsWith(`${key}:`) ? 0 : text.indexOf(`\n${key}:`) + 1;
  if (at <= 0 && !text.startsWith(`${key}:`)) return undefined;
  const end = text.indexOf("\n", at);
  return text.slice(at + key.length + 1, end < 0 ? text.length : end).trim();
}

const HEADER = 176;
const FROM_INFO = 1, LOCKS = 2;
const dec = new TextDecoder();
const enc = new TextEncoder();

function date(dv: DataView, o: number): Date {
  return new Date(
    Number(dv.getBigInt64(o, true)) * 1000 + Number(dv.getBigInt64(o + 8, true)) / 1e6,
  );
}

/** struct stat (x86_64) as Deno.FileInfo. */
function fileInfo(dv: DataView, o: number): Deno.FileInfo {
  const mode = dv.getUint32(o + 24, true);
  const type = mode & 0o170000;
  const mtime = date(dv, o + 88);
  return {
    isFile: type === 0o100000,
    isDirectory: type === 0o040000,
    isSymlink: type === 0o120000,
    isBlockDevice: type === 0o060000,
    isCharDevice: type === 0o020000,
    isFifo: type === 0o010000,
    isSocket: type === 0o140000,
    size: Number(dv.getBigInt64(o + 48, true)),
    mtime,
    atime: date(dv, o + 72),
    ctime: date(dv, o + 104),
    birthtime: null,
    dev: Number(dv.getBigUint64(o, true)),
    ino: Number(dv.getBigUint64(o + 8, true)),
    nlink: Number(dv.getBigUint64(o + 16, true)),
    mode,
    uid: dv.getUint32(o + 28, true),
    gid: dv.getUint32(o + 32, true),
    rdev: Number(dv.getBigUint64(o + 40, true)),
    blksize: Number(dv.getBigInt64(o + 56, true)),
    blocks: Number(dv.getBigInt64(o + 64, true)),
  };
}

/** A socket's stat as its fdinfo gives it (device, inode, mode): what is
 * unknown is left out. Ten thousand of them: the rest is on the prototype. */
class SocketStat implements Deno.FileInfo {
  constructor(readonly dev: number, readonly ino: number, readonly mode: number) {}
  get isFile() {
    return false;
  }
  get isDirectory() {
    return false;
  }
  get isSymlink() {
    return false;
  }
  get isBlockDevice() {
    return false;
  }
  get isCharDevice() {
    return false;
  }
  get isFifo() {
    return false;
  }
  get isSocket() {
    return true;
  }
  get size() {
    return 0;
  }
  get nlink() {
    return 1;
  }
  get rdev() {
    return 0;
  }
  get mtime() {
    return null;
  }
  get atime() {
    return null;
  }
  get ctime() {
    return null;
  }
  get birthtime() {
    return null;
  }
  get uid() {
    return null;
  }
  get gid() {
    return null;
  }
  get blksize() {
    return null;
  }
  get blocks() {
    return null;
  }
}

function socketInfo(dv: DataView, o: number): Deno.FileInfo {
  return new SocketStat(
    Number(dv.getBigUint64(o, true)),
    Number(dv.getBigUint64(o + 8, true)),
    dv.getUint32(o + 24, true),
  );
}

/** Values by (pid, fd): two levels of small-integer keys (one number for
 * both would be a heap number, hashed and allocated for every fd). */
export class FdMap<T> {
  private readonly byPid = new Map<number, Map<number, T>>();

  get(pid: number, fd: number): T | undefined {
    return this.byPid.get(pid)?.get(fd);
  }

  has(pid: number, fd: number): boolean {
    return this.byPid.get(pid)?.has(fd) ?? false;
  }

  set(pid: number, fd: number, v: T): void {
    let m = this.byPid.get(pid);
    if (!m) this.byPid.set(pid, m = new Map());
    m.set(fd, v);
  }

  delete(pid: number, fd: number): void {
    this.byPid.get(pid)?.delete(fd);
  }

  values(): T[] {
    return [...this.byPid.values()].flatMap((m) => [...m.values()]);
  }

  clear(): void {
    this.byPid.clear();
  }
}

/** The fd numbers of pid, in order. */
export function listFds(pid: number): number[] {
  let cap = 1024;
  for (;;) {
    const out = new Int32Array(cap);
    const n = check(
      native().ck_list_fds(pid, new Uint8Array(out.buffer), BigInt(cap)),
      "listing fds",
      `of pid ${pid}`,
    );
    if (n <= cap) return [...out.subarray(0, n).sort()];
    cap = n + 64;
  }
}

/** fds of pid as /proc shows them, in order. */
export function readFds(pid: number, fds: number[]): RawFd[] {
  const out: RawFd[] = [];
  let cap = Math.max(1 << 16, fds.length * 512);
  for (let i = 0; i < fds.length;) {
    const want = new Int32Array(fds.slice(i));
    const buf = new Uint8Array(cap);
    const rc = native().ck_read_fds(
      pid,
      new Uint8Array(want.buffer),
      BigInt(want.length),
      buf,
      BigInt(cap),
    );
    const n = check(rc, "reading fds", `of pid ${pid}`);
    if (n === 0) cap *= 4; // one fdinfo larger than the buffer (an epoll with many targets)
    else i += takeRecords(pid, buf, n, out);
  }
  return out;
}

/** Appends the n records ck_read_fds put in buf to out; returns n. */
function takeRecords(pid: number, buf: Uint8Array, n: number, out: RawFd[]): number {
  const dv = new DataView(buf.buffer);
  let at = 0;
  for (let k = 0; k < n; k++) {
    const fd = dv.getInt32(at, true);
    const err = dv.getInt32(at + 4, true);
    const linkLen = dv.getUint32(at + 8, true);
    const infoLen = dv.getUint32(at + 12, true);
    const flags = dv.getUint32(at + 16, true);
    const body = at + HEADER;
    const fromInfo = !err && (flags & FROM_INFO) !== 0;
    const st = err
      ? ({} as Deno.FileInfo)
      : fromInfo
      ? socketInfo(dv, at + 32)
      : fileInfo(dv, at + 32);
    out.push(
      new RawFd(
        pid,
        fd,
        -err,
        // A socket's link is its inode: made here, not decoded.
        fromInfo
          ? `socket:[${st.ino}]`
          : dec.decode(buf.subarray(body + infoLen, body + infoLen + linkLen)),
        dv.getUint32(at + 20, true),
        dv.getBigInt64(at + 24, true),
        st,
        undefined,
        buf,
        body,
        infoLen,
        (flags & LOCKS) !== 0,
      ),
    );
    at = (body + linkLen + infoLen + 7) & ~7;
  }
  return n;
}
