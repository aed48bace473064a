// Multicast groups a socket joined. The kernel lists a socket's memberships
// nowhere, but getsockopt(MCAST_MSFILTER) answers for one (interface, group)
// whether the socket joined it, and with which source filter; the groups any
// socket may have joined are those the interfaces are in (/proc/net/igmp,
// /proc/net/igmp6). Restore joins again and sets the same filter.
import { create } from "@bufbuild/protobuf";
import { type McastGroup, McastGroupSchema } from "../gen/ckpt/images_pb.ts";
import { sock, SOL } from "../native/inetsk.ts";
import { errnoText } from "../native/mod.ts";
import { addrText, AF_INET, AF_INET6, sockaddr } from "./addr.ts";

const MCAST_JOIN_GROUP = 42, MCAST_MSFILTER = 48;
const MCAST_EXCLUDE = 0;
const SS = 128; // sizeof(struct sockaddr_storage)
const HEAD = 144; // GROUP_FILTER_SIZE(0)
const MAX_SOURCES = 256;

interface Candidate {
  ifindex: number;
  family: number;
  group: Uint8Array;
}

function readText(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

/** (interface, group) pairs some socket of this namespace joined. */
export function candidates(): Candidate[] {
  const out: Candidate[] = [];
  let ifindex = 0;
  for (const line of readText("/proc/net/igmp").split("\n").slice(1)) {
    const dev = /^(\d+)\s+\S+\s*:/.exec(line);
    if (dev) {
      ifindex = Number(dev[1]);
      continue;
    }
    const g = /^\s+([0-9A-Fa-f]{8})\s/.exec(line);
    if (g && ifindex) {
      const v = parseInt(g[1], 16);
      // Printed as the host-order value of a network-order word.
      out.push({
        ifindex,
        family: AF_INET,
        group: new Uint8Array([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >>> 24]),
      });
    }
  }
  for (const line of readText("/proc/net/igmp6").split("\n")) {
    const m = /^(\d+)\s+\S+\s+([0-9a-f]{32})\s/.exec(line);
    if (!m) continue;
    const group = new Uint8Array(16);
    for (let i = 0; i < 16; i++) group[i] = parseInt(m[2].slice(2 * i, 2 * i + 2), 16);
    out.push({ ifindex: Number(m[1]), family: AF_INET6, group });
  }
  return out;
}

function groupAddr(c: { family: number; group: Uint8Array }): Uint8Array<ArrayBuffer> {
  return sockaddr({ family: c.family, addr: c.group, port: 0, flowinfo: 0, scopeId: 0 });
}

function levelFor(family: number): number {
  return family === AF_INET ? SOL.IP : SOL.IPV6;
}

/** Every group socket fd (of family `family`) joined, with its filter. */
export function readMemberships(fd: number, family: number, all = candidates()): McastGroup[] {
  const out: McastGroup[] = [];
  for (const c of all) {
    if (c.family === AF_INET6 && family !== AF_INET6) continue;
    const buf = new Uint8Array(HEAD + MAX_SOURCES * SS);
    const v = new DataView(buf.buffer);
    v.setUint32(0, c.ifindex, true);
    buf.set(groupAddr(c), 8);
    v.setUint32(140, MAX_SOURCES, true);
    const got = sock.get(fd, levelFor(c.family), MCAST_MSFILTER, buf.length, buf);
    if (typeof got === "number") continue; // not joined (EADDRNOTAVAIL) or not applicable
    const gv = new DataView(got.buffer);
    const n = Math.min(gv.getUint32(140, true), MAX_SOURCES);
    out.push(create(McastGroupSchema, {
      ifindex: c.ifindex,
      group: groupAddr(c),
      fmode: gv.getUint32(136, true),
      sources: Array.from({ length: n }, (_, i) => {
        const at = HEAD + i * SS;
        const fam = gv.getUint16(at, true);
        return got.slice(at, at + (fam === AF_INET ? 16 : 28));
      }),
    }));
  }
  return out;
}

/** Joins fd to every group again, with its filter. */
export function applyMemberships(fd: number, groups: McastGroup[], where: string): void {
  for (const g of groups) {
    const family = new DataView(g.group.buffer, g.group.byteOffset).getUint16(0, true);
    const level = levelFor(family);
    const req = new Uint8Array(8 + SS);
    new DataView(req.buffer).setUint32(0, g.ifindex, true);
    req.set(g.group, 8);
    let err = sock.set(fd, level, MCAST_JOIN_GROUP, req);
    const what = `multicast group ${
      addrText(g.group).replace(/:0$/, "")
    } on interface ${g.ifindex}`;
    if (err) throw new Error(`${where}: joining ${what} failed: ${errnoText(err)}`);
    if (g.fmode === MCAST_EXCLUDE && g.sources.length === 0) continue;
    const f = new Uint8Array(HEAD + Math.max(1, g.sources.length) * SS);
    const v = new DataView(f.buffer);
    v.setUint32(0, g.ifindex, true);
    f.set(g.group, 8);
    v.setUint32(136, g.fmode, true);
    v.setUint32(140, g.sources.length, true);
    g.sources.forEach((s, i) => f.set(s.subarray(0, SS), HEAD + i * SS));
    err = sock.set(fd, level, MCAST_MSFILTER, f.subarray(0, HEAD + g.sources.length * SS));
    if (err) throw new Error(`${where}: the source filter of ${what} failed: ${errnoText(err)}`);
  }
}

/** For messages and validation: a well-formed group. */
export function checkGroup(g: McastGroup): string | undefined {
  if (g.group.length !== 16 && g.group.length !== 28) return "multicast group address";
  if (g.sources.length > MAX_SOURCES) return "too many multicast sources";
  if (g.sources.some((s) => s.length !== 16 && s.length !== 28)) return "multicast source address";
  return undefined;
}
