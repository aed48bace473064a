// Restore side of a network namespace: at the root's first stop (its new
// namespace exists and holds only a loopback that is down), ckpt's thread
// enters it and makes the links again with their indexes (so every route,
// address and rule naming a link by index stays right), writes the sysctls,
// brings the links up, then adds what the kernel did not make by itself and
// removes what it made that the dump did not have, until addresses, routes,
// rules and neighbours are the dumped ones; loads the nftables ruleset; and
// finally compares everything with the dump.
import type { NetLink, NetNamespace, NetObject } from "../../gen/ckpt/images_pb.ts";
import { RestoreError } from "../../errors.ts";
import { fd as fdops, O } from "../../native/mod.ts";
import { log } from "../../util/log.ts";
import { sleepSync } from "../../util/sleep.ts";
import { inNamespacesOf } from "../enter.ts";
import { IFF_UP, indexOf, linkDiff, makeLink, readLinks, setMaster, setUp } from "./links.ts";
import { attrMap, NetlinkError, NLM_F_CREATE, NLM_F_EXCL, NlSocket, u32 } from "./netlink.ts";
import {
  ADDRS,
  deleteRequest,
  makeRequest,
  OBJECT_KINDS,
  objectKey,
  type ObjectKind,
  readObjects,
} from "./objects.ts";
import { sysctlDiff, writeSysctls } from "./sysctl.ts";
import { loadRuleset } from "./nft.ts";
import type { VethExternal } from "./options.ts";

export interface NetRestoreOptions {
  /** --external veth[IN]:OUT[@BR] and --veth-pair, by inside name. */
  veths?: Map<string, VethExternal>;
}

const EEXIST = 17, ENOENT = 2, ESRCH = 3, EADDRNOTAVAIL = 99;

/** The outside name each outside veth end gets. */
function outsideOf(l: NetLink, opts: NetRestoreOptions): { name: string; bridge?: string } {
  const o = opts.veths?.get(l.name);
  const name = o?.outside ?? l.peerName;
  if (!name) {
    throw new RestoreError(
      `network link ${l.name} is a veth whose outside end has no name in the images: give ` +
        `--external veth[${l.name}]:OUTSIDE_NAME`,
    );
  }
  return { name, bridge: o?.bridge ?? (l.peerBridge || undefined) };
}

/** Fills the root's new network namespace. */
export function restoreNet(root: number, img: NetNamespace, opts: NetRestoreOptions): void {
  const t0 = performance.now();
  if (img.empty) {
    // --empty-ns net: the loopback is up, as in any usable namespace; the
    // rest is the caller's (setup-namespaces).
    inNamespacesOf(root, ["net"], () => {
      const sock = NlSocket.open();
      try {
        setUp(sock, 1, "lo");
      } finally {
        sock.close();
      }
    });
    return;
  }
  const ownNet = fdops.open("/proc/thread-self/ns/net", O.RDONLY | O.CLOEXEC);
  const host = NlSocket.open();
  const outside: { name: string; bridge?: string }[] = [];
  try {
    // An outside name already taken is said before anything is made.
    for (const l of img.links) {
      if (!l.peerOutside) continue;
      const o = outsideOf(l, opts);
      if (indexOf(host, o.name) !== undefined) {
        throw new RestoreError(
          `network link ${l.name}: its outside end ${o.name} exists already in ckpt's network ` +
            `namespace (the dumped pair may still be alive): delete it, or name another end ` +
            `with --external veth[${l.name}]:NAME`,
        );
      }
      if (o.bridge && indexOf(host, o.bridge) === undefined) {
        throw new RestoreError(`network link ${l.name}: bridge ${o.bridge} does not exist`);
      }
      outside.push(o);
    }
    inNamespacesOf(root, ["net"], () => fill(img, opts, ownNet));
    for (const o of outside) {
      const i = indexOf(host, o.name);
      if (i === undefined) throw new RestoreError(`the outside veth end ${o.name} vanished`);
      if (o.bridge) {
        setMaster(host, i, indexOf(host, o.bridge)!, `putting ${o.name} into bridge ${o.bridge}`);
        setUp(host, i, o.name);
      }
    }
  } catch (err) {
    if (err instanceof NetlinkError) throw new RestoreError(`network namespace: ${err.message}`);
    throw err;
  } finally {
    host.close();
    fdops.close(ownNet);
  }
  if (img.nftRuleset) loadRuleset(root, img.nftRuleset);
  log.debug(
    `network namespace of pid ${root}: ${img.links.length} links, ${img.addrs.length} addresses, ${img.routes.length} routes made in ${
      (performance.now() - t0).toFixed(1)
    } ms`,
  );
}

function fill(img: NetNamespace, opts: NetRestoreOptions, ownNet: number): void {
  const sock = NlSocket.open();
  try {
    const byIndex = new Map(img.links.map((l) => [l.index, l]));
    const made = new Set<number>();
    for (const l of [...img.links].sort((a, b) => a.index - b.index)) {
      if (made.has(l.index)) continue;
      if (l.kind === "veth" && !l.peerOutside) {
        const p = byIndex.get(l.peerIndex);
        if (!p) {
          throw new RestoreError(
            `veth ${l.name}: its peer (index ${l.peerIndex}) is not in the images`,
          );
        }
        makeLink(sock, l, p);
        made.add(p.index);
      } else if (l.kind === "veth") {
        makeLink(sock, l, undefined, { name: outsideOf(l, opts).name, nsFd: ownNet });
      } else {
        makeLink(sock, l);
      }
      made.add(l.index);
    }
    // Sysctls before any link is up (addr_gen_mode, disable_ipv6 and the
    // like act when it comes up); duplicate address detection held off
    // while the addresses go in, so they are usable at once as they were.
    const failed = writeSysctls(img.sysctls, (p) => !/\/accept_dad$/.test(p));
    if (failed.length) throw new RestoreError(`network sysctls: ${failed.join("; ")}`);
    const dad = img.sysctls.filter((s) => /^ipv6\/conf\/[^/]+\/accept_dad$/.test(s.path));
    writeSysctls(dad.map((s) => ({ ...s, value: "0" })));
    for (const l of upOrder(img)) setUp(sock, l.index, l.name);
    converge(sock, img);
    const dadFailed = writeSysctls(dad);
    if (dadFailed.length) throw new RestoreError(`network sysctls: ${dadFailed.join("; ")}`);
    const diffs = compare(sock, img);
    if (diffs.length) {
      throw new RestoreError(
        `the restored network namespace differs from the dumped one: ${
          diffs.slice(0, 8).join("; ")
        }${diffs.length > 8 ? ` (and ${diffs.length - 8} more)` : ""}`,
      );
    }
  } finally {
    sock.close();
  }
}

/** The links that were up, in the order they came up as far as the dump
 * shows it: the kernel adds each one's IPv6 routes as it comes up, after
 * those of the links up before it (the order of routes for the same prefix
 * on several links). */
function upOrder(img: NetNamespace): NetLink[] {
  const first = new Map<number, number>();
  img.routes.forEach((r, i) => {
    if (r.head[0] !== 10) return; // IPv4 routes are kept in prefix order
    const oif = u32(attrMap(r.attrs).get(4)); // RTA_OIF
    if (oif !== undefined && !first.has(oif)) first.set(oif, i);
  });
  const at = (l: NetLink) => first.get(l.index) ?? img.routes.length + l.index;
  return img.links.filter((l) => l.flags & IFF_UP).sort((a, b) => at(a) - at(b));
}

const KINDS: [ObjectKind, (n: NetNamespace) => NetObject[]][] = [
  [ADDRS, (n) => n.addrs],
  [OBJECT_KINDS[1], (n) => n.routes],
  [OBJECT_KINDS[2], (n) => n.rules],
  [OBJECT_KINDS[3], (n) => n.neighbours],
];

/** Adds what is missing and removes what is extra, kind by kind, until the
 * namespace holds the dumped objects (the kernel makes some of its own —
 * local routes, link-local addresses — a moment after a link comes up). */
function converge(sock: NlSocket, img: NetNamespace): void {
  const end = performance.now() + 3000;
  for (let round = 0;; round++) {
    let changed = false;
    for (const [kind, of] of KINDS) {
      const want = of(img);
      const wantKeys = new Set(want.map((o) => objectKey(kind, o)));
      const have = readObjects(sock, kind);
      const haveKeys = new Set(have.map((o) => objectKey(kind, o)));
      for (const o of have) {
        if (wantKeys.has(objectKey(kind, o))) continue;
        const r = deleteRequest(kind, o);
        try {
          sock.request(kind.del, 0, r.head, r.attrs, `removing ${kind.name} ${o.text}`);
          changed = true;
        } catch (err) {
          if (
            !(err instanceof NetlinkError) || ![ENOENT, ESRCH, EADDRNOTAVAIL].includes(err.errno)
          ) {
            throw err;
          }
        }
      }
      for (const o of want) {
        if (haveKeys.has(objectKey(kind, o))) continue;
        const r = makeRequest(kind, o);
        try {
          sock.request(
            kind.add,
            NLM_F_CREATE | NLM_F_EXCL,
            r.head,
            r.attrs,
            `adding ${kind.name} ${o.text}`,
          );
          changed = true;
        } catch (err) {
          // The kernel made it meanwhile (or one like it: compared again).
          if (!(err instanceof NetlinkError) || err.errno !== EEXIST || performance.now() > end) {
            throw err;
          }
          changed = true;
        }
      }
    }
    if (!changed && round > 0) return;
    if (performance.now() > end) return;
    sleepSync(changed ? 0.005 : 0.02);
  }
}

function compare(sock: NlSocket, img: NetNamespace): string[] {
  const out: string[] = [];
  const links = new Map(readLinks(sock).map((s) => [s.link.index, s.link]));
  for (const l of img.links) {
    const d = linkDiff(l, links.get(l.index));
    if (d) out.push(d);
  }
  for (const [kind, of] of KINDS) {
    const have = new Set(readObjects(sock, kind).map((o) => objectKey(kind, o)));
    const want = new Set(of(img).map((o) => objectKey(kind, o)));
    for (const o of of(img)) {
      if (!have.has(objectKey(kind, o))) out.push(`${kind.name} ${o.text} is missing`);
    }
    for (const o of readObjects(sock, kind)) {
      if (!want.has(objectKey(kind, o))) out.push(`${kind.name} ${o.text} was not there at dump`);
    }
  }
  out.push(...sysctlDiff(img.sysctls));
  return out;
}
