// Inet socket addresses as the kernel lays them out (sockaddr_in 16 bytes,
// sockaddr_in6 28 bytes): images keep them raw, exactly as getsockname and
// getpeername gave them; this module reads, builds and prints them.

export const AF_INET = 2;
export const AF_INET6 = 10;

export interface InetAddr {
  family: number;
  /** 4 or 16 bytes, network order. */
  addr: Uint8Array;
  port: number;
  flowinfo: number;
  scopeId: number;
}

/** Parses a raw sockaddr_in / sockaddr_in6; null for anything else. */
export function parseSockaddr(raw: Uint8Array): InetAddr | null {
  if (raw.length < 2) return null;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const family = v.getUint16(0, true);
  if (family === AF_INET && raw.length >= 8) {
    return { family, port: v.getUint16(2), addr: raw.slice(4, 8), flowinfo: 0, scopeId: 0 };
  }
  if (family === AF_INET6 && raw.length >= 24) {
    return {
      family,
      port: v.getUint16(2),
      flowinfo: v.getUint32(4),
      addr: raw.slice(8, 24),
      scopeId: raw.length >= 28 ? v.getUint32(24, true) : 0,
    };
  }
  return null;
}

export function sockaddr(a: InetAddr): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.family === AF_INET ? 16 : 28);
  const v = new DataView(out.buffer);
  v.setUint16(0, a.family, true);
  v.setUint16(2, a.port);
  if (a.family === AF_INET) out.set(a.addr.subarray(0, 4), 4);
  else {
    v.setUint32(4, a.flowinfo);
    out.set(a.addr.subarray(0, 16), 8);
    v.setUint32(24, a.scopeId, true);
  }
  return out;
}

/** The same address with another port. */
export function withPort(raw: Uint8Array, port: number): Uint8Array<ArrayBuffer> {
  const a = parseSockaddr(raw);
  if (!a) return new Uint8Array(raw);
  return sockaddr({ ...a, port });
}

/** The wildcard address of a family (0.0.0.0 / ::), port 0. */
export function anyAddr(family: number): Uint8Array<ArrayBuffer> {
  return sockaddr({
    family,
    addr: new Uint8Array(family === AF_INET ? 4 : 16),
    port: 0,
    flowinfo: 0,
    scopeId: 0,
  });
}

export function isMappedV4(addr: Uint8Array): boolean {
  return addr.length === 16 && addr.subarray(0, 10).every((b) => b === 0) && addr[10] === 0xff &&
    addr[11] === 0xff;
}

/** The IPv4 address an AF_INET or v4-mapped AF_INET6 address carries. */
export function v4Of(a: InetAddr): Uint8Array | null {
  if (a.family === AF_INET) return a.addr;
  return isMappedV4(a.addr) ? a.addr.subarray(12, 16) : null;
}

export function isWildcard(a: InetAddr): boolean {
  return a.addr.every((b) => b === 0);
}

export function ipText(addr: Uint8Array): string {
  if (addr.length === 4) return [...addr].join(".");
  if (isMappedV4(addr)) return `::ffff:${[...addr.subarray(12)].join(".")}`;
  const words = Array.from({ length: 8 }, (_, i) => (addr[2 * i] << 8) | addr[2 * i + 1]);
  // The longest run of zero words becomes "::" (RFC 5952).
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(":");
  if (best < 0) return hex(words);
  return `${hex(words.slice(0, best))}::${hex(words.slice(best + bestLen))}`;
}

/** "127.0.0.1:8080", "[::1]:8080", "[fe80::1%2]:53". */
export function addrText(raw: Uint8Array | null | undefined): string {
  if (!raw || raw.length === 0) return "-";
  const a = parseSockaddr(raw);
  if (!a) return "?";
  if (a.family === AF_INET) return `${ipText(a.addr)}:${a.port}`;
  return `[${ipText(a.addr)}${a.scopeId ? `%${a.scopeId}` : ""}]:${a.port}`;
}

/** Parses "1.2.3.4" or an IPv6 text address into bytes; null if neither. */
export function parseIp(text: string): Uint8Array | null {
  const v4 = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const b = v4.slice(1).map(Number);
    return b.every((x) => x <= 255) ? new Uint8Array(b) : null;
  }
  if (!text.includes(":")) return null;
  let head = text, tail = "";
  const dbl = text.indexOf("::");
  if (dbl >= 0) [head, tail] = [text.slice(0, dbl), text.slice(dbl + 2)];
  const words = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    for (const part of s.split(":")) {
      if (part.includes(".")) {
        const q = parseIp(part);
        if (!q || q.length !== 4) return null;
        out.push((q[0] << 8) | q[1], (q[2] << 8) | q[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return null;
        out.push(parseInt(part, 16));
      }
    }
    return out;
  };
  const h = words(head), t = words(tail);
  if (!h || !t) return null;
  const fill = dbl >= 0 ? 8 - h.length - t.length : 0;
  if (fill < 0 || (dbl < 0 && h.length !== 8)) return null;
  const all = [...h, ...new Array(fill).fill(0), ...t];
  const out = new Uint8Array(16);
  all.forEach((w, i) => [out[2 * i], out[2 * i + 1]] = [w >> 8, w & 0xff]);
  return out;
}
