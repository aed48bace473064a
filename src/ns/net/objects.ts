// The objects of a network namespace that are kept as the kernel gives them
// (addresses, routes, policy rules, permanent neighbour entries): how each
// kind is read, which of its bits the kernel changes on its own (left out of
// comparisons and of the request that makes it again), and how it is said
// in `ip`'s words.
import { create } from "@bufbuild/protobuf";
import { type NetObject, NetObjectSchema } from "../../gen/ckpt/images_pb.ts";
import { Attrs, attrs, type Msg, type NlSocket, str, u32, u8 } from "./netlink.ts";

export const AF_INET = 2, AF_INET6 = 10;

export interface ObjectKind {
  name: string;
  get: number;
  add: number;
  del: number;
  /** Size of the fixed header struct. */
  head: number;
  /** The dump request's header(s), one per family asked. */
  requests: Uint8Array[];
  /** Objects of the dump that are saved (others are the kernel's business). */
  keep?(m: { head: Uint8Array; attrs: Map<number, Uint8Array> }): boolean;
  /** Header with the bits the kernel sets by itself cleared. */
  cleanHead(h: Uint8Array): Uint8Array;
  /** Attribute types that change by themselves (statistics, timers). */
  volatile: Set<number>;
  /** Attributes sent when making the object again (volatile ones out). */
  makeAttrs?(a: { type: number; data: Uint8Array }[]): { type: number; data: Uint8Array }[];
  text(head: Uint8Array, a: Map<number, Uint8Array>): string;
}

const fam = (f: number) => {
  const b = new Uint8Array(12);
  b[0] = f;
  return b;
};

function ip(d: Uint8Array | undefined): string {
  if (!d) return "?";
  if (d.length === 4) return [...d].join(".");
  if (d.length === 16) {
    const w: string[] = [];
    for (let i = 0; i < 16; i += 2) w.push(((d[i] << 8) | d[i + 1]).toString(16));
    return w.join(":").replace(/(^|:)0(:0)+(:|$)/, "::").replace(/:::+/, "::");
  }
  return [...d].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

const TABLES: Record<number, string> = { 253: "default", 254: "main", 255: "local" };
const PROTOS: Record<number, string> = { 2: "kernel", 3: "boot", 4: "static", 9: "ra" };
const RT_TYPES: Record<number, string> = {
  2: "local",
  3: "broadcast",
  4: "anycast",
  5: "multicast",
  6: "blackhole",
  7: "unreachable",
  8: "prohibit",
  9: "throw",
  10: "nat",
};

const IFA_CACHEINFO = 6, IFA_FLAGS = 8;
// IFA_F_SECONDARY (order of adding), TENTATIVE, DADFAILED, DEPRECATED,
// OPTIMISTIC: states of the address, not how it was made.
const IFA_VOLATILE_FLAGS = 0x01 | 0x40 | 0x08 | 0x20 | 0x04;
const INFINITY = 0xffffffff;

export const ADDRS: ObjectKind = {
  name: "address",
  get: 22,
  add: 20,
  del: 21,
  head: 8,
  requests: [fam(0).subarray(0, 8)],
  cleanHead(h) {
    const c = h.slice(0, 8);
    c[2] &= ~IFA_VOLATILE_FLAGS;
    return c;
  },
  volatile: new Set([IFA_CACHEINFO]),
  makeAttrs(a) {
    return a.flatMap((x) => {
      if (x.type === IFA_FLAGS) {
        const v = (u32(x.data)! & ~IFA_VOLATILE_FLAGS) >>> 0;
        const d = new Uint8Array(4);
        new DataView(d.buffer).setUint32(0, v, true);
        return [{ type: x.type, data: d }];
      }
      if (x.type === IFA_CACHEINFO) {
        // Lifetimes are sent only when finite (the kernel's default is
        // forever); the time stamps are the kernel's.
        const v = new DataView(x.data.buffer, x.data.byteOffset, 8);
        if (v.getUint32(4, true) === INFINITY) return [];
        return [{ type: x.type, data: x.data.slice(0, 16) }];
      }
      return [x];
    });
  },
  text(h, a) {
    const local = a.get(2) ?? a.get(1);
    return `${h[0] === AF_INET6 ? "inet6" : "inet"} ${ip(local)}/${h[1]} dev #${
      u32(h.subarray(4))
    }${a.has(3) ? ` label ${str(a.get(3))}` : ""}`;
  },
};

const RTA_TABLE = 15, RTA_CACHEINFO = 12, RTA_EXPIRES = 23;
const RTNH_F_ONLINK = 4;

function routeText(h: Uint8Array, a: Map<number, Uint8Array>): string {
  const dst = a.has(1) ? `${ip(a.get(1))}/${h[1]}` : "default";
  const type = RT_TYPES[h[7]];
  const table = u32(a.get(RTA_TABLE)) ?? h[4];
  const parts = [type ? `${type} ${dst}` : dst];
  if (a.has(5)) parts.push(`via ${ip(a.get(5))}`);
  if (a.has(4)) parts.push(`dev #${u32(a.get(4))}`);
  parts.push(`table ${TABLES[table] ?? table}`);
  parts.push(`proto ${PROTOS[h[5]] ?? h[5]}`);
  if (a.has(7)) parts.push(`src ${ip(a.get(7))}`);
  if (a.has(6)) parts.push(`metric ${u32(a.get(6))}`);
  return `${h[0] === AF_INET6 ? "inet6 " : ""}${parts.join(" ")}`;
}

export const ROUTES: ObjectKind = {
  name: "route",
  get: 26,
  add: 24,
  del: 25,
  head: 12,
  requests: [fam(AF_INET), fam(AF_INET6)],
  keep(m) {
    // Routes the kernel caches are not asked for; every table is kept.
    return m.head[0] === AF_INET || m.head[0] === AF_INET6;
  },
  cleanHead(h) {
    const c = h.slice(0, 12);
    const v = new DataView(c.buffer);
    v.setUint32(8, v.getUint32(8, true) & RTNH_F_ONLINK, true);
    return c;
  },
  volatile: new Set([RTA_CACHEINFO, RTA_EXPIRES]),
  text: routeText,
};

export const RULES: ObjectKind = {
  name: "rule",
  get: 34,
  add: 32,
  del: 33,
  head: 12,
  requests: [fam(AF_INET), fam(AF_INET6)],
  cleanHead(h) {
    return h.slice(0, 12);
  },
  volatile: new Set(),
  text(h, a) {
    const prio = u32(a.get(6)); // FRA_PRIORITY
    const table = u32(a.get(15)) ?? h[4]; // FRA_TABLE
    return `${h[0] === AF_INET6 ? "inet6 " : ""}${prio ?? 0}: ${
      a.has(2) ? `from ${ip(a.get(2))}/${h[2]}` : "from all"
    }${a.has(1) ? ` to ${ip(a.get(1))}/${h[1]}` : ""} lookup ${TABLES[table] ?? table}`;
  },
};

const NUD_PERMANENT = 0x80, NDA_CACHEINFO = 3, NDA_PROBES = 4;

export const NEIGHBOURS: ObjectKind = {
  name: "neighbour",
  get: 30,
  add: 28,
  del: 29,
  head: 12,
  requests: [fam(AF_INET), fam(AF_INET6)],
  keep(m) {
    const state = new DataView(m.head.buffer, m.head.byteOffset, 12).getUint16(8, true);
    return (state & NUD_PERMANENT) !== 0;
  },
  cleanHead(h) {
    return h.slice(0, 12);
  },
  volatile: new Set([NDA_CACHEINFO, NDA_PROBES]),
  text(h, a) {
    return `${ip(a.get(1))} dev #${new DataView(h.buffer, h.byteOffset, 12).getInt32(4, true)}${
      a.has(2) ? ` lladdr ${ip(a.get(2))}` : ""
    } permanent`;
  },
};

export const OBJECT_KINDS = [ADDRS, ROUTES, RULES, NEIGHBOURS] as const;

/** Every object of a kind in the socket's namespace. */
export function readObjects(sock: NlSocket, kind: ObjectKind): NetObject[] {
  const out: NetObject[] = [];
  for (const req of kind.requests) {
    let msgs: Msg[];
    try {
      msgs = sock.dump(kind.get, req, `dumping ${kind.name}s`);
    } catch (err) {
      // A family the kernel has not built in (no IPv6) has nothing to dump.
      if ((err as { errno?: number }).errno === 97) continue;
      throw err;
    }
    for (const m of msgs) {
      if (m.type !== kind.add) continue;
      const head = m.body.slice(0, kind.head);
      const raw = m.body.slice(align4(kind.head));
      const map = new Map(attrs(raw).map((x) => [x.type, x.data]));
      if (kind.keep && !kind.keep({ head, attrs: map })) continue;
      out.push(create(NetObjectSchema, { head, attrs: raw, text: kind.text(head, map) }));
    }
  }
  return out;
}

const align4 = (n: number) => (n + 3) & ~3;

/** What identifies an object's content, leaving out what the kernel
 * changes by itself. */
export function objectKey(kind: ObjectKind, o: NetObject): string {
  const list = attrs(o.attrs).filter((a) => !kind.volatile.has(a.type));
  const fixed = kind.makeAttrs ? kind.makeAttrs(list) : list;
  const parts = fixed.map((a) => `${a.type}=${hex(a.data)}`).sort();
  return `${hex(kind.cleanHead(o.head))}|${parts.join(",")}`;
}

/** The request that makes the object again. */
export function makeRequest(kind: ObjectKind, o: NetObject): { head: Uint8Array; attrs: Attrs } {
  const list = attrs(o.attrs).filter((a) =>
    !kind.volatile.has(a.type) || (kind === ADDRS && a.type === IFA_CACHEINFO)
  );
  const at = new Attrs();
  for (const a of kind.makeAttrs ? kind.makeAttrs(list) : list) at.add(a.type, a.data);
  return { head: kind.cleanHead(o.head), attrs: at };
}

/** The request that removes an object as read. */
export function deleteRequest(kind: ObjectKind, o: NetObject): { head: Uint8Array; attrs: Attrs } {
  const at = new Attrs();
  for (const a of attrs(o.attrs)) if (!kind.volatile.has(a.type)) at.add(a.type, a.data);
  return { head: o.head, attrs: at };
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

export { u8 };
