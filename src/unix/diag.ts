// Parses NETLINK_SOCK_DIAG replies for AF_UNIX (linux/unix_diag.h) into plain
// records. Pure: takes the bytes src/native/sockdiag.ts returns.
import { UDIAG_SHOW_ALL, unixDiagDump, unixDiagOne } from "../native/sockdiag.ts";

export type UnixType = "STREAM" | "DGRAM" | "SEQPACKET" | `TYPE${number}`;
/** The kernel keeps TCP state numbers for UNIX sockets; CLOSE means unconnected. */
export type UnixState =
  | "ESTABLISHED"
  | "CONNECTING"
  | "UNCONNECTED"
  | "LISTEN"
  | `STATE${number}`;

export interface UnixSocket {
  inode: number;
  /** The kernel's socket cookie: an inode number can be reused, the cookie not. */
  cookie: number;
  type: UnixType;
  state: UnixState;
  /** Bound name: a path, or "@name" for the abstract namespace; null if unbound. */
  name: string | null;
  abstract: boolean;
  /** Device and inode of the socket file a path-bound socket created. */
  vfs: { dev: number; ino: number } | null;
  /** Inode of the connected peer; 0 when the peer was closed; null when not connected. */
  peer: number | null;
  /** For listeners: inodes of the clients whose connections wait in accept(). */
  pending: number[] | null;
  /** Bytes queued (listeners: connections waiting). */
  rqueue: number | null;
  /** Bytes sent and not yet received (listeners: the backlog). */
  wqueue: number | null;
  /** SHUT_RD = 1, SHUT_WR = 2 bits as the kernel records them. */
  shutdown: number | null;
  uid: number | null;
  /** SK_MEMINFO_* values (rmem_alloc, rcvbuf, wmem_alloc, sndbuf, …). */
  meminfo: number[] | null;
}

const SOCK_TYPES: Record<number, UnixType> = { 1: "STREAM", 2: "DGRAM", 5: "SEQPACKET" };
const STATES: Record<number, UnixState> = {
  1: "ESTABLISHED",
  2: "CONNECTING",
  7: "UNCONNECTED",
  10: "LISTEN",
};

export const SHUT_RD = 1;
export const SHUT_WR = 2;

const NLMSG_HDRLEN = 16;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const SOCK_DIAG_BY_FAMILY = 20;
const AF_UNIX = 1;
const UNIX_DIAG_MSG_LEN = 16;

const ATTR = {
  NAME: 0,
  VFS: 1,
  PEER: 2,
  ICONS: 3,
  RQLEN: 4,
  MEMINFO: 5,
  SHUTDOWN: 6,
  UID: 7,
} as const;

const align4 = (n: number) => (n + 3) & ~3;

/** Malformed netlink data: a kernel/ckpt mismatch, never a user error. */
export class DiagParseError extends Error {
  constructor(message: string) {
    super(`sock_diag reply: ${message}`);
    this.name = "DiagParseError";
  }
}

/** Renders a sun_path the way ss(8) does: abstract names start with "@", and
 * a NUL inside an abstract name also shows as "@". */
const dec = new TextDecoder();

export function formatName(raw: Uint8Array): { name: string; abstract: boolean } {
  if (raw.length > 0 && raw[0] === 0) {
    return { name: "@" + dec.decode(raw.subarray(1)).replaceAll("\0", "@"), abstract: true };
  }
  let end = raw.indexOf(0);
  if (end < 0) end = raw.length;
  return { name: dec.decode(raw.subarray(0, end)), abstract: false };
}

/** One message at off (len bytes); `v` views all of `bytes`. */
function parseOne(bytes: Uint8Array, v: DataView, off: number, len: number): UnixSocket {
  if (len < NLMSG_HDRLEN + UNIX_DIAG_MSG_LEN) throw new DiagParseError(`message of ${len} bytes`);
  const m = off + NLMSG_HDRLEN;
  const family = v.getUint8(m);
  if (family !== AF_UNIX) throw new DiagParseError(`family ${family} is not AF_UNIX`);
  const typeNum = v.getUint8(m + 1), stateNum = v.getUint8(m + 2);
  const sock: UnixSocket = {
    inode: v.getUint32(m + 4, true),
    cookie: v.getUint32(m + 8, true) + v.getUint32(m + 12, true) * 2 ** 32,
    type: SOCK_TYPES[typeNum] ?? `TYPE${typeNum}`,
    state: STATES[stateNum] ?? `STATE${stateNum}`,
    name: null,
    abstract: false,
    vfs: null,
    peer: null,
    pending: null,
    rqueue: null,
    wqueue: null,
    shutdown: null,
    uid: null,
    meminfo: null,
  };
  const end = off + len;
  let a = off + NLMSG_HDRLEN + UNIX_DIAG_MSG_LEN;
  while (a + 4 <= end) {
    const alen = v.getUint16(a, true);
    const atype = v.getUint16(a + 2, true) & 0x3fff; // drop NLA_F_NESTED / NET_BYTEORDER
    if (alen < 4 || a + alen > end) {
      throw new DiagParseError(`attribute ${atype} of ${alen} bytes`);
    }
    const p = a + 4, plen = alen - 4;
    switch (atype) {
      case ATTR.NAME: {
        const n = formatName(bytes.subarray(p, p + plen));
        sock.name = n.name;
        sock.abstract = n.abstract;
        break;
      }
      case ATTR.VFS:
        if (plen >= 8) sock.vfs = { ino: v.getUint32(p, true), dev: v.getUint32(p + 4, true) };
        break;
      case ATTR.PEER:
        if (plen >= 4) sock.peer = v.getUint32(p, true);
        break;
      case ATTR.ICONS:
        sock.pending = words(v, p, plen);
        break;
      case ATTR.RQLEN:
        if (plen >= 8) {
          sock.rqueue = v.getUint32(p, true);
          sock.wqueue = v.getUint32(p + 4, true);
        }
        break;
      case ATTR.MEMINFO:
        sock.meminfo = words(v, p, plen);
        break;
      case ATTR.SHUTDOWN:
        if (plen >= 1) sock.shutdown = v.getUint8(p);
        break;
      case ATTR.UID:
        if (plen >= 4) sock.uid = v.getUint32(p, true);
        break;
    }
    a += align4(alen);
  }
  return sock;
}

/** The u32s of an attribute's payload. */
function words(v: DataView, p: number, plen: number): number[] {
  const out = new Array<number>(plen >> 2);
  for (let i = 0; i < out.length; i++) out[i] = v.getUint32(p + 4 * i, true);
  return out;
}

/** Every unix_diag_msg in a stream of netlink messages, in kernel order. */
export function parseUnixDiag(bytes: Uint8Array): UnixSocket[] {
  const out: UnixSocket[] = [];
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let off = 0;
  while (off + NLMSG_HDRLEN <= bytes.length) {
    const len = v.getUint32(off, true);
    const type = v.getUint16(off + 4, true);
    if (len < NLMSG_HDRLEN || off + len > bytes.length) {
      throw new DiagParseError(`netlink message of ${len} bytes at offset ${off}`);
    }
    if (type === NLMSG_DONE) break;
    if (type === NLMSG_ERROR) throw new DiagParseError(`kernel error message at offset ${off}`);
    if (type === SOCK_DIAG_BY_FAMILY) out.push(parseOne(bytes, v, off, len));
    off += align4(len);
  }
  return out;
}

/** Every UNIX socket of ckpt's network namespace, by inode; `atLeast`: how
 * many there are known to be, at least. */
export function readUnixSockets(show = UDIAG_SHOW_ALL, atLeast = 0): Map<number, UnixSocket> {
  return new Map(parseUnixDiag(unixDiagDump(show, atLeast)).map((s) => [s.inode, s]));
}

/** One socket by inode; null when it does not exist in this namespace. */
export function readUnixSocket(inode: number, show = UDIAG_SHOW_ALL): UnixSocket | null {
  const bytes = unixDiagOne(inode, show);
  return bytes ? parseUnixDiag(bytes)[0] ?? null : null;
}
