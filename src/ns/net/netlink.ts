// Netlink messages in TypeScript: building requests (a fixed header struct
// and attributes), splitting replies, and a socket that acts in the network
// namespace it was opened in (opened while ckpt's thread is inside the
// tree's namespace, it goes on acting there from anywhere).
import { fd as fdops, NativeError } from "../../native/mod.ts";
import { errnoText } from "../../native/errno.ts";
import { NETLINK_ROUTE, nlSocket, nlTalk } from "../../native/rtnl.ts";

export const NLM_F_REQUEST = 0x1, NLM_F_ACK = 0x4, NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100, NLM_F_EXCL = 0x200, NLM_F_CREATE = 0x400;
const NLMSG_ERROR = 2, NLMSG_DONE = 3;
const NLMSGERR_ATTR_MSG = 1;
const NLM_F_ACK_TLVS = 0x200;
export const NLA_F_NESTED = 0x8000;

/** One reply message: its type and flags, and its payload (fixed struct
 * then attributes). */
export interface Msg {
  type: number;
  flags: number;
  body: Uint8Array;
}

export interface Attr {
  type: number;
  data: Uint8Array;
}

const align4 = (n: number) => (n + 3) & ~3;

/** The attributes in b (a run of struct nlattr). Malformed runs throw. */
export function attrs(b: Uint8Array): Attr[] {
  const out: Attr[] = [];
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let off = 0;
  while (off + 4 <= b.length) {
    const len = v.getUint16(off, true);
    const type = v.getUint16(off + 2, true) & ~NLA_F_NESTED & 0x7fff;
    if (len < 4 || off + len > b.length) throw new Error(`malformed netlink attribute at ${off}`);
    out.push({ type, data: b.subarray(off + 4, off + len) });
    off += align4(len);
  }
  return out;
}

export function attrMap(b: Uint8Array): Map<number, Uint8Array> {
  return new Map(attrs(b).map((a) => [a.type, a.data]));
}

export const u8 = (d: Uint8Array | undefined) => d?.[0];
export function u32(d: Uint8Array | undefined): number | undefined {
  if (!d || d.length < 4) return undefined;
  return new DataView(d.buffer, d.byteOffset, 4).getUint32(0, true);
}
export function str(d: Uint8Array | undefined): string | undefined {
  if (!d) return undefined;
  const end = d.indexOf(0);
  return new TextDecoder().decode(end < 0 ? d : d.subarray(0, end));
}

/** Attribute builder. */
export class Attrs {
  private parts: Uint8Array[] = [];
  private size = 0;

  add(type: number, data: Uint8Array): this {
    const len = 4 + data.length;
    const b = new Uint8Array(align4(len));
    const v = new DataView(b.buffer);
    v.setUint16(0, len, true);
    v.setUint16(2, type, true);
    b.set(data, 4);
    this.parts.push(b);
    this.size += b.length;
    return this;
  }
  u32(type: number, n: number): this {
    const d = new Uint8Array(4);
    new DataView(d.buffer).setUint32(0, n >>> 0, true);
    return this.add(type, d);
  }
  u8(type: number, n: number): this {
    return this.add(type, Uint8Array.of(n));
  }
  str(type: number, s: string): this {
    const e = new TextEncoder().encode(s);
    const d = new Uint8Array(e.length + 1);
    d.set(e);
    return this.add(type, d);
  }
  nest(type: number, inner: Attrs): this {
    return this.add(type | NLA_F_NESTED, inner.bytes());
  }
  /** Raw attributes (already framed) appended as they are. */
  raw(b: Uint8Array): this {
    const c = new Uint8Array(align4(b.length));
    c.set(b);
    this.parts.push(c);
    this.size += c.length;
    return this;
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.size);
    let off = 0;
    for (const p of this.parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  }
}

/** A refusal by the kernel: errno and, where it gave one, its reason. */
export class NetlinkError extends Error {
  constructor(readonly errno: number, readonly what: string, readonly reason?: string) {
    super(`${what}: ${errnoText(errno)}${reason ? ` (${reason})` : ""}`);
    this.name = "NetlinkError";
  }
}

let seq = 1;

export class NlSocket {
  private constructor(readonly fd: number) {}

  /** A socket in the calling thread's network namespace. */
  static open(protocol = NETLINK_ROUTE): NlSocket {
    return new NlSocket(nlSocket(protocol));
  }

  close(): void {
    fdops.close(this.fd);
  }

  private talk(type: number, flags: number, head: Uint8Array, at: Attrs | undefined, what: string) {
    const a = at?.bytes() ?? new Uint8Array(0);
    const len = 16 + align4(head.length) + a.length;
    const req = new Uint8Array(len);
    const v = new DataView(req.buffer);
    const s = seq++ >>> 0;
    v.setUint32(0, len, true);
    v.setUint16(4, type, true);
    v.setUint16(6, NLM_F_REQUEST | flags, true);
    v.setUint32(8, s, true);
    req.set(head, 16);
    req.set(a, 16 + align4(head.length));
    let reply: Uint8Array;
    try {
      reply = nlTalk(this.fd, req, what);
    } catch (err) {
      if (err instanceof NativeError) throw new NetlinkError(err.errno, what);
      throw err;
    }
    return split(reply, what);
  }

  /** Every object a dump request returns. */
  dump(type: number, head: Uint8Array, what: string, at?: Attrs): Msg[] {
    return this.talk(type, NLM_F_DUMP, head, at, what);
  }

  /** A request answered by one message (a GET without DUMP). */
  get(type: number, head: Uint8Array, what: string, at?: Attrs): Msg[] {
    return this.talk(type, 0, head, at, what);
  }

  /** A request that changes something, acknowledged (or refused: throws
   * NetlinkError). */
  request(type: number, flags: number, head: Uint8Array, at: Attrs, what: string): void {
    this.talk(type, flags | NLM_F_ACK, head, at, what);
  }
}

/** Splits a reply stream; an NLMSG_ERROR with an errno throws. */
function split(b: Uint8Array, what: string): Msg[] {
  const out: Msg[] = [];
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let off = 0;
  while (off + 16 <= b.length) {
    const len = v.getUint32(off, true);
    const type = v.getUint16(off + 4, true);
    const flags = v.getUint16(off + 6, true);
    if (len < 16 || off + len > b.length) throw new NetlinkError(71, what, "malformed reply");
    const body = b.subarray(off + 16, off + len);
    if (type === NLMSG_ERROR) {
      const err = -new DataView(body.buffer, body.byteOffset, 4).getInt32(0, true);
      if (err !== 0) {
        let reason: string | undefined;
        if (flags & NLM_F_ACK_TLVS) {
          // The request's header comes back (capped: only its header) and
          // the extended ack's attributes follow it.
          const reqLen = new DataView(body.buffer, body.byteOffset + 4, 4).getUint32(0, true);
          const capped = (flags & 0x100) !== 0; // NLM_F_CAPPED
          const at = 4 + (capped ? 16 : align4(reqLen));
          try {
            reason = str(attrMap(body.subarray(at)).get(NLMSGERR_ATTR_MSG));
          } catch { /* no reason given */ }
        }
        throw new NetlinkError(err, what, reason);
      }
      break;
    }
    if (type === NLMSG_DONE) {
      const err = body.length >= 4
        ? -new DataView(body.buffer, body.byteOffset, 4).getInt32(0, true)
        : 0;
      if (err > 0) throw new NetlinkError(err, what);
      break;
    }
    out.push({ type, flags, body });
    off += align4(len);
  }
  return out;
}

export function hexBytes(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}
