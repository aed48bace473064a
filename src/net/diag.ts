// sock_diag for inet (INET_DIAG: TCP, UDP, UDP-Lite over IPv4 and IPv6) and
// netlink (NETLINK_DIAG) sockets: the requests, and the replies parsed into
// plain records. The whole namespace's table is read once per question.
import { sockDiag } from "../native/inetsk.ts";
import { NativeError } from "../native/mod.ts";
import { AF_INET, AF_INET6, sockaddr } from "./addr.ts";

export const IPPROTO_TCP = 6, IPPROTO_UDP = 17, IPPROTO_UDPLITE = 136;
const AF_NETLINK = 16;
const NLMSG_HDRLEN = 16, NLMSG_ERROR = 2, NLMSG_DONE = 3;
const align4 = (n: number) => (n + 3) & ~3;

/** TCP states as the kernel numbers them (UDP: 1 connected, 7 not). */
export const TCP_STATES: Record<number, string> = {
  1: "ESTABLISHED",
  2: "SYN_SENT",
  3: "SYN_RECV",
  4: "FIN_WAIT1",
  5: "FIN_WAIT2",
  6: "TIME_WAIT",
  7: "CLOSE",
  8: "CLOSE_WAIT",
  9: "LAST_ACK",
  10: "LISTEN",
  11: "CLOSING",
  12: "NEW_SYN_RECV",
};

export interface InetDiag {
  family: number;
  protocol: number;
  state: number;
  /** Raw sockaddrs, as getsockname/getpeername would give them. */
  local: Uint8Array;
  peer: Uint8Array;
  /** Listeners: connections waiting in accept() / the backlog; others:
   * bytes queued to read / to send. */
  rqueue: number;
  wqueue: number;
  uid: number;
  inode: number;
  ifindex: number;
  /** sk_shutdown: RCV_SHUTDOWN 1, SEND_SHUTDOWN 2. */
  shutdown: number;
}

function addrOf(family: number, v: DataView, at: number, port: number, ifindex: number) {
  const len = family === AF_INET ? 4 : 16;
  const addr = new Uint8Array(v.buffer, v.byteOffset + at, len).slice();
  return sockaddr({
    family,
    addr,
    port,
    flowinfo: 0,
    scopeId: family === AF_INET6 && addr[0] === 0xfe && (addr[1] & 0xc0) === 0x80 ? ifindex : 0,
  });
}

function* messages(bytes: Uint8Array, want: number): Generator<[DataView, number, number]> {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let off = 0;
  while (off + NLMSG_HDRLEN <= bytes.length) {
    const len = v.getUint32(off, true);
    const type = v.getUint16(off + 4, true);
    if (len < NLMSG_HDRLEN || off + len > bytes.length) {
      throw new Error(`sock_diag reply: netlink message of ${len} bytes at offset ${off}`);
    }
    if (type === NLMSG_DONE) return;
    if (type === NLMSG_ERROR) throw new Error(`sock_diag reply: kernel error at offset ${off}`);
    if (type === want) yield [v, off, len];
    off += align4(len);
  }
}

function* attrs(v: DataView, from: number, end: number): Generator<[number, number, number]> {
  let a = from;
  while (a + 4 <= end) {
    const alen = v.getUint16(a, true);
    const atype = v.getUint16(a + 2, true) & 0x3fff;
    if (alen < 4 || a + alen > end) break;
    yield [atype, a + 4, alen - 4];
    a += align4(alen);
  }
}

const SOCK_DIAG_BY_FAMILY = 20;

/** Every socket of one family and protocol in ckpt's network namespace. */
export function inetDiag(family: number, protocol: number): InetDiag[] {
  const req = new Uint8Array(56);
  const rv = new DataView(req.buffer);
  req[0] = family;
  req[1] = protocol;
  req[2] = 0;
  rv.setUint32(4, 0xffffffff, true); // every state
  let bytes: Uint8Array;
  try {
    bytes = sockDiag(req, true, `(inet family ${family}, protocol ${protocol})`);
  } catch (err) {
    // A protocol whose diag module is not built in answers ENOENT.
    if (err instanceof NativeError && (err.errno === 2 || err.errno === 22)) return [];
    throw err;
  }
  const out: InetDiag[] = [];
  for (const [v, off, len] of messages(bytes, SOCK_DIAG_BY_FAMILY)) {
    const m = off + NLMSG_HDRLEN;
    if (len < NLMSG_HDRLEN + 72) continue;
    const fam = v.getUint8(m);
    const ifindex = v.getUint32(m + 40, true);
    const d: InetDiag = {
      family: fam,
      protocol,
      state: v.getUint8(m + 1),
      local: addrOf(fam, v, m + 8, v.getUint16(m + 4), ifindex),
      peer: addrOf(fam, v, m + 24, v.getUint16(m + 6), ifindex),
      rqueue: v.getUint32(m + 56, true),
      wqueue: v.getUint32(m + 60, true),
      uid: v.getUint32(m + 64, true),
      inode: v.getUint32(m + 68, true),
      ifindex,
      shutdown: 0,
    };
    for (const [t, p, plen] of attrs(v, m + 72, off + len)) {
      if (t === 8 && plen >= 1) d.shutdown = v.getUint8(p); // INET_DIAG_SHUTDOWN
    }
    out.push(d);
  }
  return out;
}

/** TCP, UDP and UDP-Lite sockets of both families, by inode (0: no file,
 * e.g. connections waiting in accept()). */
export class InetTable {
  readonly all: InetDiag[];
  readonly byInode = new Map<number, InetDiag>();

  constructor(protocols = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE]) {
    this.all = protocols.flatMap((p) => [...inetDiag(AF_INET, p), ...inetDiag(AF_INET6, p)]);
    for (const d of this.all) if (d.inode) this.byInode.set(d.inode, d);
  }

  /** The socket at the other end of connection d, if it is on this machine. */
  peerOf(d: InetDiag): InetDiag | undefined {
    return this.all.find((o) =>
      o !== d && o.protocol === d.protocol && o.state !== 10 && sameBytes(o.local, d.peer) &&
      sameBytes(o.peer, d.local)
    );
  }

  /** Connections a TCP listener has not accepted yet. */
  pendingOf(l: InetDiag): InetDiag[] {
    const lp = portOf(l.local);
    return this.all.filter((o) =>
      o.protocol === IPPROTO_TCP && o.inode === 0 && (o.state === 1 || o.state === 8) &&
      portOf(o.local) === lp && (isAny(l.local) || sameIp(o.local, l.local))
    );
  }
}

function portOf(raw: Uint8Array): number {
  return (raw[2] << 8) | raw[3];
}

function ipBytes(raw: Uint8Array): Uint8Array {
  return raw.length === 16 ? raw.subarray(4, 8) : raw.subarray(8, 24);
}

function isAny(raw: Uint8Array): boolean {
  return ipBytes(raw).every((b) => b === 0);
}

function sameIp(a: Uint8Array, b: Uint8Array): boolean {
  const x = ipBytes(a), y = ipBytes(b);
  const v4 = (z: Uint8Array) =>
    z.length === 4 ? z : z.subarray(0, 10).every((q) => q === 0) && z[10] === 0xff &&
        z[11] === 0xff
      ? z.subarray(12)
      : z;
  return sameBytes(v4(x), v4(y));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) {
    // An IPv6 socket's v4-mapped connection against an IPv4 one.
    return portOf(a) === portOf(b) && sameIp(a, b);
  }
  return a.every((x, i) => x === b[i]);
}

export interface NetlinkDiag {
  type: number;
  protocol: number;
  state: number;
  portid: number;
  dstPortid: number;
  dstGroup: number;
  inode: number;
  /** Bytes queued to read (SK_MEMINFO_RMEM_ALLOC). */
  rmem: number;
  groups: number[];
  /** NDIAG_FLAG_*: CB_RUNNING 1 (a dump being answered), PKTINFO 2… */
  flags: number;
}

export const NDIAG_FLAG_CB_RUNNING = 1;

/** Every netlink socket of ckpt's network namespace, by inode. */
export function netlinkDiag(): Map<number, NetlinkDiag> {
  const req = new Uint8Array(20);
  const rv = new DataView(req.buffer);
  req[0] = AF_NETLINK;
  req[1] = 255; // NDIAG_PROTO_ALL
  rv.setUint32(8, 1 | 2 | 8, true); // NDIAG_SHOW_MEMINFO | GROUPS | FLAGS
  const bytes = sockDiag(req, true, "(netlink)");
  const out = new Map<number, NetlinkDiag>();
  for (const [v, off, len] of messages(bytes, SOCK_DIAG_BY_FAMILY)) {
    const m = off + NLMSG_HDRLEN;
    if (len < NLMSG_HDRLEN + 28) continue;
    const d: NetlinkDiag = {
      type: v.getUint8(m + 1),
      protocol: v.getUint8(m + 2),
      state: v.getUint8(m + 3),
      portid: v.getUint32(m + 4, true),
      dstPortid: v.getUint32(m + 8, true),
      dstGroup: v.getUint32(m + 12, true),
      inode: v.getUint32(m + 16, true),
      rmem: 0,
      groups: [],
      flags: 0,
    };
    for (const [t, p, plen] of attrs(v, m + 28, off + len)) {
      if (t === 1 && plen >= 4) d.rmem = v.getUint32(p, true);
      else if (t === 2) {
        for (let w = 0; w + 4 <= plen; w += 4) {
          const word = v.getUint32(p + w, true);
          for (let b = 0; b < 32; b++) if (word & (1 << b)) d.groups.push(w * 8 + b + 1);
        }
      } else if (t === 5 && plen >= 4) d.flags = v.getUint32(p, true);
    }
    out.set(d.inode, d);
  }
  return out;
}
