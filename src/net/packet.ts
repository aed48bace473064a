// IP packets ckpt puts on the wire itself, from a raw socket whose mark the
// connection lock lets through: a TCP FIN or ACK the peer sent before the
// dump (the one thing a restored half-closed connection cannot get from
// repair mode), a reset for --tcp-close, and queued datagrams given back to
// a restored UDP socket from their original sender. Pure: bytes in, bytes out.
import { AF_INET, AF_INET6, type InetAddr, isMappedV4, sockaddr } from "./addr.ts";

export const TCP_FIN = 0x01, TCP_RST = 0x04, TCP_ACK = 0x10;
const IPPROTO_TCP = 6;

function sum16(b: Uint8Array, s = 0): number {
  for (let i = 0; i + 1 < b.length; i += 2) s += (b[i] << 8) | b[i + 1];
  if (b.length & 1) s += b[b.length - 1] << 8;
  return s;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return (~s) & 0xffff;
}

/** How the addresses go on the wire: an IPv6 socket's v4-mapped
 * connection travels as IPv4. */
function wire(a: InetAddr): { family: number; ip: Uint8Array } {
  if (a.family === AF_INET6 && isMappedV4(a.addr)) {
    return { family: AF_INET, ip: a.addr.subarray(12) };
  }
  return { family: a.family, ip: a.addr };
}

/** An IP packet carrying `payload` (a transport header and data whose
 * checksum field is at csumAt, still zero) from src to dst; with the
 * sockaddr to send it to and the family of the raw socket. */
export function ipPacket(
  src: InetAddr,
  dst: InetAddr,
  proto: number,
  payload: Uint8Array,
  csumAt: number,
  opts: { ttl?: number; tos?: number; csumCover?: number } = {},
): { family: number; packet: Uint8Array<ArrayBuffer>; to: Uint8Array<ArrayBuffer> } {
  const s = wire(src), d = wire(dst);
  const family = s.family === d.family ? s.family : AF_INET6;
  const body = new Uint8Array(payload);
  // The pseudo-header sum, then the covered part of the segment.
  const cover = opts.csumCover ?? body.length;
  let ps = sum16(s.ip) + sum16(d.ip) + proto;
  ps += body.length; // the upper-layer length
  const c = fold(sum16(body.subarray(0, cover), ps));
  // UDP sends a computed zero as 0xffff (zero means "no checksum").
  new DataView(body.buffer).setUint16(csumAt, c === 0 && proto === 17 ? 0xffff : c);
  const ttl = opts.ttl || 64, tos = opts.tos ?? 0;
  if (family === AF_INET) {
    const pkt = new Uint8Array(20 + body.length);
    const v = new DataView(pkt.buffer);
    v.setUint8(0, 0x45);
    v.setUint8(1, tos);
    v.setUint16(2, pkt.length);
    v.setUint16(4, 0);
    v.setUint16(6, 0x4000); // DF
    v.setUint8(8, ttl);
    v.setUint8(9, proto);
    pkt.set(s.ip, 12);
    pkt.set(d.ip, 16);
    v.setUint16(10, fold(sum16(pkt.subarray(0, 20))));
    pkt.set(body, 20);
    return {
      family,
      packet: pkt,
      to: sockaddr({ family, addr: d.ip, port: 0, flowinfo: 0, scopeId: 0 }),
    };
  }
  const pkt = new Uint8Array(40 + body.length);
  const v = new DataView(pkt.buffer);
  v.setUint32(0, (6 << 28) | (tos << 20));
  v.setUint16(4, body.length);
  v.setUint8(6, proto);
  v.setUint8(7, ttl);
  pkt.set(s.ip, 8);
  pkt.set(d.ip, 24);
  pkt.set(body, 40);
  return {
    family,
    packet: pkt,
    to: sockaddr({ family, addr: d.ip, port: 0, flowinfo: 0, scopeId: dst.scopeId }),
  };
}

/** A bare TCP segment (no options, no data) from `from` to `to`. */
export function tcpSegment(
  from: InetAddr,
  to: InetAddr,
  seq: number,
  ack: number,
  flags: number,
  window: number,
): ReturnType<typeof ipPacket> {
  const seg = new Uint8Array(20);
  const v = new DataView(seg.buffer);
  v.setUint16(0, from.port);
  v.setUint16(2, to.port);
  v.setUint32(4, seq >>> 0);
  v.setUint32(8, ack >>> 0);
  v.setUint8(12, 5 << 4);
  v.setUint8(13, flags);
  v.setUint16(14, Math.min(0xffff, Math.max(0, window)));
  return ipPacket(from, to, IPPROTO_TCP, seg, 16);
}

/** A UDP (17) or UDP-Lite (136) datagram from `from` to `to`. */
export function udpDatagram(
  proto: number,
  from: InetAddr,
  to: InetAddr,
  data: Uint8Array,
  opts: { ttl?: number; tos?: number } = {},
): ReturnType<typeof ipPacket> {
  const seg = new Uint8Array(8 + data.length);
  const v = new DataView(seg.buffer);
  v.setUint16(0, from.port);
  v.setUint16(2, to.port);
  // UDP-Lite's length field is its checksum coverage: 0 covers it all.
  v.setUint16(4, proto === 136 ? 0 : seg.length);
  seg.set(data, 8);
  return ipPacket(from, to, proto, seg, 6, opts);
}
