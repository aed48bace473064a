// The links of a network namespace: read (rtnetlink RTM_GETLINK), the kinds
// ckpt can make again (the loopback, veth pairs — both ends inside, or one
// end outside given with --external veth[IN]:OUT — and dummies), made again
// with their index, name, MAC, MTU and flags, and compared after restore.
import { create } from "@bufbuild/protobuf";
import { type NetLink, NetLinkSchema } from "../../gen/ckpt/images_pb.ts";
import {
  attrMap,
  Attrs,
  hexBytes,
  NLM_F_CREATE,
  NLM_F_EXCL,
  type NlSocket,
  str,
  u32,
} from "./netlink.ts";

const RTM_NEWLINK = 16, RTM_GETLINK = 18, RTM_GETNSID = 90;
const IFLA_ADDRESS = 1, IFLA_BROADCAST = 2, IFLA_IFNAME = 3, IFLA_MTU = 4, IFLA_LINK = 5;
const IFLA_MASTER = 10, IFLA_TXQLEN = 13, IFLA_LINKINFO = 18, IFLA_IFALIAS = 20;
const IFLA_GROUP = 27, IFLA_NET_NS_FD = 28, IFLA_LINK_NETNSID = 37;
const IFLA_INFO_KIND = 1, IFLA_INFO_DATA = 2, VETH_INFO_PEER = 1;
const NETNSA_NSID = 1, NETNSA_FD = 3;

export const IFF_UP = 0x1;
/** ifi_flags a user sets (the others are the kernel's: RUNNING, LOWER_UP…). */
export const SETTABLE_FLAGS = 0x1 | 0x4 | 0x80 | 0x100 | 0x200 | 0x1000 | 0x8000;

export const KINDS_MADE = ["loopback", "veth", "dummy"];

/** A link as read, before any decision about it. */
export interface SeenLink {
  link: NetLink;
  /** IFLA_LINKINFO kind ("" for none: the loopback or a physical device). */
  kind: string;
  master: number;
  /** veth: the peer's index in its own namespace, and its namespace's id as
   * seen from this one (undefined: the same namespace). */
  peerLink?: number;
  peerNsid?: number;
}

function ifinfo(index: number, flags = 0, change = 0): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setInt32(4, index, true);
  v.setUint32(8, flags, true);
  v.setUint32(12, change, true);
  return b;
}

export function readLinks(sock: NlSocket): SeenLink[] {
  const out: SeenLink[] = [];
  for (const m of sock.dump(RTM_GETLINK, ifinfo(0), "dumping links")) {
    if (m.type !== RTM_NEWLINK) continue;
    const v = new DataView(m.body.buffer, m.body.byteOffset, 16);
    const index = v.getInt32(4, true);
    const flags = v.getUint32(8, true);
    const a = attrMap(m.body.subarray(16));
    const info = a.has(IFLA_LINKINFO) ? attrMap(a.get(IFLA_LINKINFO)!) : new Map();
    const kind = str(info.get(IFLA_INFO_KIND)) ?? "";
    const isLo = (flags & 0x8) !== 0; // IFF_LOOPBACK
    out.push({
      link: create(NetLinkSchema, {
        index,
        name: str(a.get(IFLA_IFNAME)) ?? "",
        kind: isLo && !kind ? "loopback" : kind,
        flags: flags & SETTABLE_FLAGS,
        mtu: u32(a.get(IFLA_MTU)) ?? 0,
        address: a.get(IFLA_ADDRESS)?.slice() ?? new Uint8Array(0),
        broadcast: a.get(IFLA_BROADCAST)?.slice() ?? new Uint8Array(0),
        txqlen: u32(a.get(IFLA_TXQLEN)) ?? 0,
        alias: str(a.get(IFLA_IFALIAS)) ?? "",
        group: u32(a.get(IFLA_GROUP)) ?? 0,
      }),
      kind,
      master: u32(a.get(IFLA_MASTER)) ?? 0,
      peerLink: kind === "veth" ? u32(a.get(IFLA_LINK)) : undefined,
      peerNsid: a.has(IFLA_LINK_NETNSID)
        ? new DataView(a.get(IFLA_LINK_NETNSID)!.buffer, a.get(IFLA_LINK_NETNSID)!.byteOffset, 4)
          .getInt32(0, true)
        : undefined,
    });
  }
  return out;
}

/** The id the socket's namespace gives the namespace of nsFd (-1: none). */
export function nsidOf(sock: NlSocket, nsFd: number): number {
  const head = new Uint8Array(4); // struct rtgenmsg, padded
  const msgs = sock.get(
    RTM_GETNSID,
    head,
    "asking a namespace id",
    new Attrs().u32(NETNSA_FD, nsFd),
  );
  for (const m of msgs) {
    const a = attrMap(m.body.subarray(4));
    const id = a.get(NETNSA_NSID);
    if (id) return new DataView(id.buffer, id.byteOffset, 4).getInt32(0, true);
  }
  return -1;
}

/** A link's name by index in the socket's namespace (undefined: none). */
export function nameOf(sock: NlSocket, index: number): string | undefined {
  for (const l of readLinks(sock)) if (l.link.index === index) return l.link.name;
  return undefined;
}

function linkAttrs(l: NetLink, at = new Attrs()): Attrs {
  at.str(IFLA_IFNAME, l.name);
  if (l.mtu) at.u32(IFLA_MTU, l.mtu);
  if (l.txqlen) at.u32(IFLA_TXQLEN, l.txqlen);
  if (l.address.length && l.kind !== "loopback") at.add(IFLA_ADDRESS, l.address);
  if (l.group) at.u32(IFLA_GROUP, l.group);
  return at;
}

/** Makes a link (down; flags other than up set), or for the loopback sets
 * what it has. `peer`: the other end of a veth made with it. `outside`: the
 * outside end's name and the fd of the namespace it goes to. */
export function makeLink(
  sock: NlSocket,
  l: NetLink,
  peer?: NetLink,
  outside?: { name: string; nsFd: number },
): void {
  const flags = l.flags & ~IFF_UP;
  const change = SETTABLE_FLAGS & ~IFF_UP;
  const what = `making link ${l.name} (${l.kind}, index ${l.index})`;
  if (l.kind === "loopback") {
    const at = new Attrs();
    if (l.mtu) at.u32(IFLA_MTU, l.mtu);
    if (l.txqlen) at.u32(IFLA_TXQLEN, l.txqlen);
    if (l.group) at.u32(IFLA_GROUP, l.group);
    sock.request(RTM_NEWLINK, 0, ifinfo(l.index, flags, change), at, what);
  } else {
    const at = linkAttrs(l);
    const info = new Attrs().str(IFLA_INFO_KIND, l.kind);
    if (l.kind === "veth") {
      const p = new Attrs();
      let head: Uint8Array;
      if (peer) {
        head = ifinfo(peer.index, peer.flags & ~IFF_UP, change);
        linkAttrs(peer, p);
      } else {
        head = ifinfo(0);
        p.str(IFLA_IFNAME, outside!.name).u32(IFLA_NET_NS_FD, outside!.nsFd);
      }
      const data = new Uint8Array(head.length + p.bytes().length);
      data.set(head);
      data.set(p.bytes(), head.length);
      info.nest(IFLA_INFO_DATA, new Attrs().add(VETH_INFO_PEER, data));
    }
    at.nest(IFLA_LINKINFO, info);
    sock.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, ifinfo(l.index, flags, change), at, what);
  }
  if (l.alias) {
    sock.request(
      RTM_NEWLINK,
      0,
      ifinfo(l.index),
      new Attrs().str(IFLA_IFALIAS, l.alias),
      `setting the alias of link ${l.name}`,
    );
  }
}

export function setUp(sock: NlSocket, index: number, name: string, up = true): void {
  sock.request(
    RTM_NEWLINK,
    0,
    ifinfo(index, up ? IFF_UP : 0, IFF_UP),
    new Attrs(),
    `bringing link ${name} ${up ? "up" : "down"}`,
  );
}

/** Puts link index (in the socket's namespace) into bridge `master`. */
export function setMaster(sock: NlSocket, index: number, master: number, what: string): void {
  sock.request(RTM_NEWLINK, 0, ifinfo(index), new Attrs().u32(IFLA_MASTER, master), what);
}

export function indexOf(sock: NlSocket, name: string): number | undefined {
  for (const l of readLinks(sock)) if (l.link.name === name) return l.link.index;
  return undefined;
}

/** What differs between a dumped link and the restored one ("" when none). */
export function linkDiff(want: NetLink, got: NetLink | undefined): string {
  if (!got) return `link ${want.name} (index ${want.index}) is missing`;
  const d: string[] = [];
  if (got.name !== want.name) d.push(`name ${got.name}`);
  if (got.flags !== want.flags) {
    d.push(`flags 0x${got.flags.toString(16)} (dumped 0x${want.flags.toString(16)})`);
  }
  if (got.mtu !== want.mtu) d.push(`mtu ${got.mtu} (dumped ${want.mtu})`);
  if (want.kind !== "loopback" && hexBytes(got.address) !== hexBytes(want.address)) {
    d.push(`address ${hexBytes(got.address)} (dumped ${hexBytes(want.address)})`);
  }
  if (got.txqlen !== want.txqlen) d.push(`txqueuelen ${got.txqlen} (dumped ${want.txqlen})`);
  if (got.alias !== want.alias) d.push(`alias "${got.alias}" (dumped "${want.alias}")`);
  return d.length ? `link ${want.name} (index ${want.index}): ${d.join(", ")}` : "";
}
