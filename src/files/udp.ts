// UDP and UDP-Lite sockets (IPv4 and IPv6): bound and connected addresses,
// options, multicast memberships with their source filters, and every
// datagram queued to read with its sender's address, the address it was
// sent to, its TTL and TOS (read with MSG_PEEK from SO_PEEK_OFF 0 while the
// socket briefly asks for IP_ORIGDSTADDR/TTL/TOS; nothing is consumed and
// the task's own settings are put back). Restore gives each datagram back
// from its original sender: an IP packet built by ckpt, sent from a raw
// socket, so the program reads the same bytes from the same address.
import { create } from "@bufbuild/protobuf";
import {
  type Datagram,
  DatagramSchema,
  type FileEntry,
  FileKind,
  type InetSocket,
  UdpSocketFileSchema,
} from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops } from "../native/mod.ts";
import { errnoText } from "../native/errno.ts";
import { sock, SOL } from "../native/inetsk.ts";
import { sleepSync } from "../util/sleep.ts";
import {
  AF_INET,
  AF_INET6,
  anyAddr,
  type InetAddr,
  isWildcard,
  parseSockaddr,
  v4Of,
} from "../net/addr.ts";
import { InetTable, IPPROTO_UDP, IPPROTO_UDPLITE } from "../net/diag.ts";
import { LOCK_MARK } from "../net/lock.ts";
import { applyMemberships, readMemberships } from "../net/mcast.ts";
import { udpDatagram } from "../net/packet.ts";
import { savedInt } from "../net/options.ts";
import {
  applyLater,
  bindBack,
  isInet,
  newInetSocket,
  readInet,
  SOCK_DGRAM,
  socketInode,
  sockKind,
  sockText,
  validateInet,
} from "./inet.ts";
import type { DumpContext, FileKindOps, RestoreContext } from "./kind.ts";

const SO_PEEK_OFF = 42, SO_RCVBUF = 8, SO_RCVBUFFORCE = 33;
const MSG_PEEK = 2, MSG_DONTWAIT = 0x40, MSG_TRUNC = 0x20;
const UDP_CORK = 1;
/** IP_RECVORIGDSTADDR, IP_RECVTTL, IP_RECVTOS and their IPv6 twins. */
const RECV_V4 = [20, 12, 13];
const RECV_V6 = [74, 51, 66];
const MAX_DGRAM = 65536;
const MAX_QUEUE = 1 << 20;

const tables = {};

function diagOf(ctx: DumpContext, ino: number) {
  return ctx.local(tables, () => new InetTable([IPPROTO_UDP, IPPROTO_UDPLITE])).byInode.get(ino);
}

interface Cmsgs {
  to?: Uint8Array;
  ttl?: number;
  tos?: number;
}

/** The control messages of one peeked datagram. */
function parseCmsgs(ctl: Uint8Array): Cmsgs {
  const out: Cmsgs = {};
  const v = new DataView(ctl.buffer, ctl.byteOffset, ctl.byteLength);
  let off = 0;
  while (off + 16 <= ctl.length) {
    const len = Number(v.getBigUint64(off, true));
    if (len < 16 || off + len > ctl.length) break;
    const level = v.getInt32(off + 8, true), type = v.getInt32(off + 12, true);
    const d = ctl.subarray(off + 16, off + len);
    const int = () => d.length >= 4 ? new DataView(d.buffer, d.byteOffset).getInt32(0, true) : d[0];
    if (level === SOL.IP && type === 20) out.to = d.slice(0, 16); // IP_ORIGDSTADDR
    else if (level === SOL.IP && type === 2) out.ttl = int(); // IP_TTL
    else if (level === SOL.IP && type === 1) out.tos = d[0]; // IP_TOS
    else if (level === SOL.IPV6 && type === 74) out.to = d.slice(0, 28); // IPV6_ORIGDSTADDR
    else if (level === SOL.IPV6 && type === 52) out.ttl = int(); // IPV6_HOPLIMIT
    else if (level === SOL.IPV6 && type === 67) out.tos = int(); // IPV6_TCLASS
    off += (len + 7) & ~7;
  }
  return out;
}

/** Every datagram queued on copy, oldest first, nothing consumed. */
function peekQueue(copy: number, family: number, where: string): Datagram[] {
  const asks: [number, number][] = [
    ...RECV_V4.map((n): [number, number] => [SOL.IP, n]),
    ...(family === AF_INET6 ? RECV_V6.map((n): [number, number] => [SOL.IPV6, n]) : []),
  ];
  const saved = asks.map(([l, n]) => sock.get(copy, l, n));
  const peekOff = sock.getInt(copy, SOL.SOCKET, SO_PEEK_OFF);
  const out: Datagram[] = [];
  try {
    for (const [l, n] of asks) sock.setInt(copy, l, n, 1);
    sock.setInt(copy, SOL.SOCKET, SO_PEEK_OFF, 0);
    const buf = new Uint8Array(MAX_DGRAM);
    let bytes = 0;
    for (;;) {
      const r = sock.recv(copy, buf, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC);
      if (!r) break;
      if (r.len > buf.length) throw new DumpError(`${where}: a queued datagram of ${r.len} bytes`);
      const c = parseCmsgs(r.ctl);
      out.push(create(DatagramSchema, {
        data: buf.slice(0, r.len),
        from: r.from,
        to: c.to ?? new Uint8Array(),
        ttl: c.ttl ?? 0,
        tos: c.tos ?? 0,
      }));
      bytes += r.len;
      if (bytes > MAX_QUEUE * 64 || out.length > MAX_QUEUE) {
        throw new DumpError(`${where}: more than ${out.length} datagrams queued`);
      }
    }
  } finally {
    asks.forEach(([l, n], i) => {
      const v = saved[i];
      if (typeof v !== "number") sock.set(copy, l, n, v);
    });
    sock.setInt(copy, SOL.SOCKET, SO_PEEK_OFF, peekOff);
  }
  return out;
}

function dumpUdp(fd: Parameters<FileKindOps["dump"]>[0], ctx: DumpContext) {
  const kind = sockKind(fd, ctx)!;
  const copy = ctx.copyFd(fd.pid, fd.fd, fd.where);
  try {
    const cls = kind.protocol === IPPROTO_UDPLITE ? "udplite" : "udp";
    const sk = readInet(copy, fd, kind, cls);
    const diag = diagOf(ctx, socketInode(fd));
    sk.shutdown = diag?.shutdown ?? 0;
    if (savedInt(sk.opts, SOL.UDP, UDP_CORK) && (diag?.wqueue ?? 0) > 0) {
      throw new DumpError(
        `${fd.where}: the ${sockText(sk)} holds a corked datagram not sent yet (UDP_CORK); ` +
          `dump again once it is sent`,
      );
    }
    sk.mcast = readMemberships(copy, kind.domain);
    return create(UdpSocketFileSchema, { sk, queue: peekQueue(copy, kind.domain, fd.where) });
  } finally {
    if (copy !== fd.fd) fdops.close(copy);
  }
}

function isMulticastOrBroadcast(a: InetAddr): boolean {
  const v4 = v4Of(a);
  if (v4) return v4[0] >= 224 || (v4[0] === 255 && v4[1] === 255 && v4[2] === 255 && v4[3] === 255);
  return a.addr[0] === 0xff;
}

const LOOPBACK4 = new Uint8Array([127, 0, 0, 1]);
const LOOPBACK6 = new Uint8Array([...new Array(15).fill(0), 1]);

/** Where a datagram is given back to: where it went, unless that would
 * reach other sockets too (multicast, broadcast) or is unknown; then the
 * socket's own address (loopback when bound to the wildcard). */
function destination(sk: InetSocket, d: Datagram, local: InetAddr): InetAddr {
  const to = d.to.length ? parseSockaddr(d.to) : null;
  if (to && !isMulticastOrBroadcast(to) && !isWildcard(to)) return { ...to, port: local.port };
  if (!isWildcard(local) && !isMulticastOrBroadcast(local)) return local;
  const fromV4 = parseSockaddr(d.from) && v4Of(parseSockaddr(d.from)!);
  if (sk.family === AF_INET || fromV4) {
    return { family: AF_INET, addr: LOOPBACK4, port: local.port, flowinfo: 0, scopeId: 0 };
  }
  return { family: AF_INET6, addr: LOOPBACK6, port: local.port, flowinfo: 0, scopeId: 0 };
}

/** How many datagrams fd has queued (peeked from offset 0). */
function countQueued(fd: number): number {
  const before = sock.getInt(fd, SOL.SOCKET, SO_PEEK_OFF);
  sock.setInt(fd, SOL.SOCKET, SO_PEEK_OFF, 0);
  const buf = new Uint8Array(1);
  let n = 0;
  try {
    while (sock.recv(fd, buf, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC)) n++;
  } finally {
    sock.setInt(fd, SOL.SOCKET, SO_PEEK_OFF, before);
  }
  return n;
}

/** Each datagram sent again from its sender, then counted in. */
function giveBack(fd: number, f: FileEntry, where: string): void {
  const u = f.udp!;
  const sk = u.sk!;
  if (u.queue.length === 0) return;
  const local = parseSockaddr(sock.name(fd) ?? anyAddr(sk.family))!;
  const total = u.queue.reduce((n, d) => n + d.data.length + 1024, 0);
  const rcvbuf = sock.getInt(fd, SOL.SOCKET, SO_RCVBUF);
  if (rcvbuf < 2 * total) sock.setInt(fd, SOL.SOCKET, SO_RCVBUFFORCE, total);
  for (const d of u.queue) {
    const from = parseSockaddr(d.from);
    if (!from) throw new RestoreError(`${where}: a queued datagram has no sender address`);
    const p = udpDatagram(sk.protocol, from, destination(sk, d, local), d.data, {
      ttl: d.ttl,
      tos: d.tos,
    });
    try {
      sock.rawSend(p.family, p.packet, p.to, LOCK_MARK, where);
    } catch (err) {
      throw new RestoreError(
        `${where}: giving the ${sockText(sk)} its queued datagrams back failed: ${
          (err as Error).message
        }`,
      );
    }
  }
  const end = performance.now() + 500;
  let got = countQueued(fd);
  while (got < u.queue.length && performance.now() < end) {
    sleepSync(2);
    got = countQueued(fd);
  }
  if (got !== u.queue.length) {
    throw new RestoreError(
      `${where}: ${got} of the ${u.queue.length} datagrams given back reached the ${
        sockText(sk)
      } (a firewall rule, or another socket on the same port, took the rest)`,
    );
  }
}

function openUdp(f: FileEntry, ctx: RestoreContext, where: string): number {
  const sk = f.udp!.sk!;
  const fd = newInetSocket(sk, where, ctx.authority);
  try {
    bindBack(fd, sk, where);
    if (sk.peer.length) {
      const err = sock.connect(fd, sk.peer);
      if (err) {
        throw new RestoreError(
          `${where}: connecting the ${sockText(sk)} failed: ${errnoText(err)}`,
        );
      }
    }
    giveBack(fd, f, where);
    applyLater(fd, sk, where);
    try {
      applyMemberships(fd, sk.mcast, where);
    } catch (err) {
      throw new RestoreError((err as Error).message);
    }
    if (sk.shutdown) sock.shutdown(fd, sk.shutdown === 3 ? 2 : sk.shutdown - 1);
    return fd;
  } catch (err) {
    fdops.close(fd);
    throw err;
  }
}

export const udp: FileKindOps = {
  name: "UDP socket",
  // Made inside the tree's network namespace when it has its own.
  network: true,
  kinds: [FileKind.FILE_UDP],

  claims: (fd, ctx) => {
    const k = sockKind(fd, ctx);
    return isInet(k) && k.type === SOCK_DGRAM &&
      (k.protocol === IPPROTO_UDP || k.protocol === IPPROTO_UDPLITE);
  },

  dump: (fd, ctx) => ({ kind: FileKind.FILE_UDP, udp: dumpUdp(fd, ctx) }),

  validate(f, fail) {
    const u = f.udp ?? fail("UDP socket details missing");
    const sk = validateInet(u.sk, fail);
    if (sk.type !== SOCK_DGRAM || ![IPPROTO_UDP, IPPROTO_UDPLITE].includes(sk.protocol)) {
      fail("not a UDP socket");
    }
    if (u.queue.length > MAX_QUEUE) fail(`${u.queue.length} queued datagrams`);
    for (const d of u.queue) {
      if (d.data.length > MAX_DGRAM) fail(`a datagram of ${d.data.length} bytes`);
      if (!parseSockaddr(d.from)) fail("a datagram without a sender address");
      if (d.to.length && !parseSockaddr(d.to)) fail("a datagram's destination address");
      if (d.ttl > 255 || d.tos > 255) fail("a datagram's TTL or TOS");
    }
    if (sk.shutdown > 3) fail(`shutdown ${sk.shutdown}`);
  },

  open: openUdp,

  inheritKey: (f) => `socket:[${f.udp?.sk?.ino}]`,
};
