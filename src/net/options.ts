// The socket options ckpt saves and sets again on inet and netlink sockets.
// Dump reads every option of the table that applies to the socket (the raw
// getsockopt value); restore sets one only when the new socket's own value
// differs, so defaults stay defaults. Options that must precede bind()
// (address reuse, v6only, freebind, the device) are set before it. Only
// options listed here are ever set: an image cannot ask for others.
import { create } from "@bufbuild/protobuf";
import { type SockOpt, SockOptSchema } from "../gen/ckpt/images_pb.ts";
import { sock, SOL } from "../native/inetsk.ts";
import { errnoText } from "../native/mod.ts";

/** Which sockets an option is read from. */
export type SockClass = "tcp" | "udp" | "udplite" | "raw" | "ping" | "netlink";

interface OptDef {
  level: number;
  name: number;
  label: string;
  /** Bytes getsockopt returns (4 for an int). */
  len: number;
  on: readonly SockClass[];
  /** 10: IPv6 sockets only (IP-level options apply to both families:
   * an IPv6 socket's IPv4-mapped traffic uses them). */
  family?: number;
  /** Set before bind(). */
  prebind?: boolean;
  /** The kernel doubles SO_RCVBUF/SO_SNDBUF: set half with the _FORCE option. */
  force?: number;
  /** Not set on a connection rebuilt in repair mode (handled by repair). */
  notRepaired?: boolean;
  /** A name (device, congestion control): set up to its NUL. */
  str?: boolean;
}

const INET: readonly SockClass[] = ["tcp", "udp", "udplite", "raw", "ping"];
const DGRAM: readonly SockClass[] = ["udp", "udplite", "raw", "ping"];
const TCP: readonly SockClass[] = ["tcp"];
const SOLS = SOL.SOCKET, IP = SOL.IP, IPV6 = SOL.IPV6;

const TABLE: OptDef[] = [
  { level: SOLS, name: 2, label: "SO_REUSEADDR", len: 4, on: INET, prebind: true },
  { level: SOLS, name: 15, label: "SO_REUSEPORT", len: 4, on: INET, prebind: true },
  { level: SOLS, name: 25, label: "SO_BINDTODEVICE", len: 16, on: INET, prebind: true, str: true },
  { level: IP, name: 15, label: "IP_FREEBIND", len: 4, on: INET, prebind: true },
  { level: IP, name: 19, label: "IP_TRANSPARENT", len: 4, on: INET, prebind: true },
  { level: IP, name: 24, label: "IP_BIND_ADDRESS_NO_PORT", len: 4, on: INET, prebind: true },
  { level: IPV6, name: 26, label: "IPV6_V6ONLY", len: 4, on: INET, family: 10, prebind: true },
  { level: SOLS, name: 7, label: "SO_SNDBUF", len: 4, on: [...INET, "netlink"], force: 32 },
  { level: SOLS, name: 8, label: "SO_RCVBUF", len: 4, on: [...INET, "netlink"], force: 33 },
  { level: SOLS, name: 5, label: "SO_DONTROUTE", len: 4, on: INET },
  { level: SOLS, name: 6, label: "SO_BROADCAST", len: 4, on: DGRAM },
  { level: SOLS, name: 9, label: "SO_KEEPALIVE", len: 4, on: TCP },
  { level: SOLS, name: 10, label: "SO_OOBINLINE", len: 4, on: TCP },
  { level: SOLS, name: 11, label: "SO_NO_CHECK", len: 4, on: ["udp"] },
  { level: SOLS, name: 12, label: "SO_PRIORITY", len: 4, on: [...INET, "netlink"] },
  { level: SOLS, name: 13, label: "SO_LINGER", len: 8, on: TCP },
  { level: SOLS, name: 16, label: "SO_PASSCRED", len: 4, on: ["netlink"] },
  { level: SOLS, name: 18, label: "SO_RCVLOWAT", len: 4, on: TCP },
  { level: SOLS, name: 20, label: "SO_RCVTIMEO", len: 16, on: [...INET, "netlink"] },
  { level: SOLS, name: 21, label: "SO_SNDTIMEO", len: 16, on: [...INET, "netlink"] },
  { level: SOLS, name: 29, label: "SO_TIMESTAMP", len: 4, on: [...DGRAM, "tcp"] },
  { level: SOLS, name: 35, label: "SO_TIMESTAMPNS", len: 4, on: [...DGRAM, "tcp"] },
  { level: SOLS, name: 36, label: "SO_MARK", len: 4, on: INET },
  { level: SOLS, name: 40, label: "SO_RXQ_OVFL", len: 4, on: [...DGRAM, "netlink"] },
  { level: SOLS, name: 42, label: "SO_PEEK_OFF", len: 4, on: ["udp", "udplite", "tcp"] },
  { level: SOLS, name: 46, label: "SO_BUSY_POLL", len: 4, on: INET },
  { level: IP, name: 1, label: "IP_TOS", len: 4, on: INET },
  { level: IP, name: 2, label: "IP_TTL", len: 4, on: INET },
  { level: IP, name: 3, label: "IP_HDRINCL", len: 4, on: ["raw"] },
  { level: IP, name: 6, label: "IP_RECVOPTS", len: 4, on: DGRAM },
  { level: IP, name: 8, label: "IP_PKTINFO", len: 4, on: DGRAM },
  { level: IP, name: 10, label: "IP_MTU_DISCOVER", len: 4, on: INET },
  { level: IP, name: 11, label: "IP_RECVERR", len: 4, on: INET },
  { level: IP, name: 12, label: "IP_RECVTTL", len: 4, on: DGRAM },
  { level: IP, name: 13, label: "IP_RECVTOS", len: 4, on: DGRAM },
  { level: IP, name: 20, label: "IP_RECVORIGDSTADDR", len: 4, on: DGRAM },
  { level: IP, name: 21, label: "IP_MINTTL", len: 4, on: INET },
  { level: IP, name: 22, label: "IP_NODEFRAG", len: 4, on: ["raw"] },
  { level: IP, name: 32, label: "IP_MULTICAST_IF", len: 4, on: DGRAM },
  { level: IP, name: 33, label: "IP_MULTICAST_TTL", len: 4, on: DGRAM },
  { level: IP, name: 34, label: "IP_MULTICAST_LOOP", len: 4, on: DGRAM },
  { level: IP, name: 49, label: "IP_MULTICAST_ALL", len: 4, on: DGRAM },
  { level: IPV6, name: 16, label: "IPV6_UNICAST_HOPS", len: 4, on: INET, family: 10 },
  { level: IPV6, name: 17, label: "IPV6_MULTICAST_IF", len: 4, on: DGRAM, family: 10 },
  { level: IPV6, name: 18, label: "IPV6_MULTICAST_HOPS", len: 4, on: DGRAM, family: 10 },
  { level: IPV6, name: 19, label: "IPV6_MULTICAST_LOOP", len: 4, on: DGRAM, family: 10 },
  { level: IPV6, name: 23, label: "IPV6_MTU_DISCOVER", len: 4, on: INET, family: 10 },
  { level: IPV6, name: 25, label: "IPV6_RECVERR", len: 4, on: INET, family: 10 },
  { level: IPV6, name: 29, label: "IPV6_MULTICAST_ALL", len: 4, on: DGRAM, family: 10 },
  { level: IPV6, name: 49, label: "IPV6_RECVPKTINFO", len: 4, on: DGRAM, family: 10 },
  { level: IPV6, name: 51, label: "IPV6_RECVHOPLIMIT", len: 4, on: DGRAM, family: 10 },
  { level: IPV6, name: 62, label: "IPV6_DONTFRAG", len: 4, on: DGRAM, family: 10 },
  { level: IPV6, name: 66, label: "IPV6_RECVTCLASS", len: 4, on: DGRAM, family: 10 },
  { level: IPV6, name: 67, label: "IPV6_TCLASS", len: 4, on: INET, family: 10 },
  { level: IPV6, name: 74, label: "IPV6_RECVORIGDSTADDR", len: 4, on: DGRAM, family: 10 },
  { level: IPV6, name: 75, label: "IPV6_TRANSPARENT", len: 4, on: INET, family: 10, prebind: true },
  { level: IPV6, name: 78, label: "IPV6_FREEBIND", len: 4, on: INET, family: 10, prebind: true },
  { level: SOL.TCP, name: 1, label: "TCP_NODELAY", len: 4, on: TCP },
  { level: SOL.TCP, name: 2, label: "TCP_MAXSEG", len: 4, on: TCP, notRepaired: true },
  { level: SOL.TCP, name: 3, label: "TCP_CORK", len: 4, on: TCP },
  { level: SOL.TCP, name: 4, label: "TCP_KEEPIDLE", len: 4, on: TCP },
  { level: SOL.TCP, name: 5, label: "TCP_KEEPINTVL", len: 4, on: TCP },
  { level: SOL.TCP, name: 6, label: "TCP_KEEPCNT", len: 4, on: TCP },
  { level: SOL.TCP, name: 7, label: "TCP_SYNCNT", len: 4, on: TCP },
  { level: SOL.TCP, name: 8, label: "TCP_LINGER2", len: 4, on: TCP },
  { level: SOL.TCP, name: 9, label: "TCP_DEFER_ACCEPT", len: 4, on: TCP },
  { level: SOL.TCP, name: 10, label: "TCP_WINDOW_CLAMP", len: 4, on: TCP, notRepaired: true },
  { level: SOL.TCP, name: 13, label: "TCP_CONGESTION", len: 16, on: TCP, str: true },
  { level: SOL.TCP, name: 16, label: "TCP_THIN_LINEAR_TIMEOUTS", len: 4, on: TCP },
  { level: SOL.TCP, name: 18, label: "TCP_USER_TIMEOUT", len: 4, on: TCP },
  { level: SOL.TCP, name: 23, label: "TCP_FASTOPEN", len: 4, on: TCP },
  { level: SOL.TCP, name: 25, label: "TCP_NOTSENT_LOWAT", len: 4, on: TCP },
  { level: SOL.TCP, name: 30, label: "TCP_FASTOPEN_CONNECT", len: 4, on: TCP },
  { level: SOL.TCP, name: 36, label: "TCP_INQ", len: 4, on: TCP },
  { level: SOL.UDP, name: 1, label: "UDP_CORK", len: 4, on: ["udp"] },
  { level: SOL.UDP, name: 101, label: "UDP_NO_CHECK6_TX", len: 4, on: ["udp"], family: 10 },
  { level: SOL.UDP, name: 102, label: "UDP_NO_CHECK6_RX", len: 4, on: ["udp"], family: 10 },
  { level: SOL.UDP, name: 103, label: "UDP_SEGMENT", len: 4, on: ["udp"] },
  { level: SOL.UDP, name: 104, label: "UDP_GRO", len: 4, on: ["udp"] },
  { level: SOL.UDPLITE, name: 10, label: "UDPLITE_SEND_CSCOV", len: 4, on: ["udplite"] },
  { level: SOL.UDPLITE, name: 11, label: "UDPLITE_RECV_CSCOV", len: 4, on: ["udplite"] },
  { level: SOL.RAW, name: 1, label: "ICMP_FILTER", len: 4, on: ["raw"] },
  { level: 58, name: 1, label: "ICMP6_FILTER", len: 32, on: ["raw"], family: 10 },
  { level: IPV6, name: 7, label: "IPV6_CHECKSUM", len: 4, on: ["raw"], family: 10 },
  // SOL_NETLINK
  { level: 270, name: 3, label: "NETLINK_PKTINFO", len: 4, on: ["netlink"] },
  { level: 270, name: 4, label: "NETLINK_BROADCAST_ERROR", len: 4, on: ["netlink"] },
  { level: 270, name: 5, label: "NETLINK_NO_ENOBUFS", len: 4, on: ["netlink"] },
  { level: 270, name: 8, label: "NETLINK_LISTEN_ALL_NSID", len: 4, on: ["netlink"] },
  { level: 270, name: 10, label: "NETLINK_CAP_ACK", len: 4, on: ["netlink"] },
  { level: 270, name: 11, label: "NETLINK_EXT_ACK", len: 4, on: ["netlink"] },
  { level: 270, name: 12, label: "NETLINK_GET_STRICT_CHK", len: 4, on: ["netlink"] },
];

const byKey = new Map(TABLE.map((d) => [`${d.level}/${d.name}`, d]));

export function optionLabel(o: { level: number; name: number }): string {
  return byKey.get(`${o.level}/${o.name}`)?.label ?? `option (${o.level}, ${o.name})`;
}

/** Every option of the table that applies, as the socket has it now. */
export function readOptions(fd: number, cls: SockClass, family: number): SockOpt[] {
  const defs = TABLE.filter((d) => d.on.includes(cls) && !(d.family === 10 && family !== 10));
  const vals = sock.getMany(fd, defs);
  const out: SockOpt[] = [];
  defs.forEach((d, i) => {
    const v = vals[i];
    // An errno: not an option of this kind of socket after all.
    if (typeof v !== "number") {
      out.push(create(SockOptSchema, { level: d.level, name: d.name, value: v }));
    }
  });
  return out;
}

/** What an image may hold: known options with sane lengths. */
export function checkOption(o: SockOpt): string | undefined {
  const d = byKey.get(`${o.level}/${o.name}`);
  if (!d) return `unknown socket option (${o.level}, ${o.name})`;
  if (o.value.length > d.len) return `${d.label} value of ${o.value.length} bytes`;
  return undefined;
}

function same(a: Uint8Array, b: Uint8Array, str: boolean): boolean {
  // A string option (device, congestion control) compares up to its NUL.
  const x = str ? trimNul(a) : a, y = str ? trimNul(b) : b;
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

export interface ApplyWhat {
  /** Only the options to set before bind (true) or only the others (false). */
  prebind: boolean;
  /** A connection rebuilt in repair mode: leave what repair sets. */
  repaired?: boolean;
  /** Skip these (level/name keys), e.g. options set elsewhere. */
  skip?: Set<string>;
}

export function optKey(level: number, name: number): string {
  return `${level}/${name}`;
}

/** Sets on fd every saved option (of this phase) whose value differs from
 * fd's own; throws one line naming the option. */
export function applyOptions(fd: number, opts: SockOpt[], what: ApplyWhat, where: string): void {
  for (const o of opts) {
    const d = byKey.get(optKey(o.level, o.name));
    if (!d || !!d.prebind !== what.prebind) continue;
    if (what.repaired && d.notRepaired) continue;
    if (what.skip?.has(optKey(o.level, o.name))) continue;
    const now = sock.get(fd, d.level, d.name, d.len);
    if (typeof now !== "number" && same(now, o.value, !!d.str)) continue;
    let err: number;
    if (d.force && o.value.length >= 4) {
      // getsockopt shows the doubled size; the _FORCE option ignores rmem_max/wmem_max.
      const v = new DataView(o.value.buffer, o.value.byteOffset).getInt32(0, true);
      err = sock.setInt(fd, SOL.SOCKET, d.force, Math.max(1, v >> 1));
    } else err = sock.set(fd, d.level, d.name, d.str ? trimNul(o.value) : o.value);
    if (err) throw new Error(`${where}: setting ${d.label} failed: ${errnoText(err)}`);
  }
}

function trimNul(v: Uint8Array): Uint8Array {
  const nul = v.indexOf(0);
  return nul < 0 ? v : v.subarray(0, nul);
}

/** An int option's saved value, if it was saved. */
export function savedInt(opts: SockOpt[], level: number, name: number): number | undefined {
  const o = opts.find((x) => x.level === level && x.name === name);
  if (!o || o.value.length < 4) return undefined;
  return new DataView(o.value.buffer, o.value.byteOffset).getInt32(0, true);
}
