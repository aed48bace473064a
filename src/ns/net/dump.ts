// Dump side of a network namespace of the tree's own: its links, addresses,
// routes, rules, permanent neighbours, sysctls and nftables ruleset, read
// over rtnetlink from a socket opened inside it. What ckpt cannot make
// again is a blocker naming it: links of other kinds, a link in a bridge, a
// veth whose other end is outside unless --external veth[IN] says that end
// is the caller's, legacy iptables tables.
import { create } from "@bufbuild/protobuf";
import { type NetNamespace, NetNamespaceSchema } from "../../gen/ckpt/images_pb.ts";
import { fd as fdops, O } from "../../native/mod.ts";
import { inNamespacesOf } from "../enter.ts";
import { KINDS_MADE, nameOf, nsidOf, readLinks } from "./links.ts";
import { NlSocket } from "./netlink.ts";
import { OBJECT_KINDS, readObjects } from "./objects.ts";
import { readSysctls } from "./sysctl.ts";
import { dumpRuleset, hasNftTables, legacyTables, openNetfilter } from "./nft.ts";
import { parseVethExternals } from "./options.ts";
import { log } from "../../util/log.ts";

export interface NetDumpOptions {
  /** --empty-ns net: the namespace's content is the caller's. */
  emptyNs?: boolean;
  /** --external values (veth[IN], veth[IN]:OUT, veth[IN]:OUT@BRIDGE). */
  external?: string[];
}

/** The root's network namespace; each problem goes to block(). */
export function dumpNet(
  root: number,
  opts: NetDumpOptions,
  block: (message: string) => void,
): NetNamespace {
  const ext = externalNet(root, opts.external ?? []);
  if (ext) return create(NetNamespaceSchema, { empty: true, externalKey: ext });
  if (opts.emptyNs) return create(NetNamespaceSchema, { empty: true });
  const t0 = performance.now();
  const img = create(NetNamespaceSchema, {});
  const veths = parseVethExternals(opts.external ?? []);
  const ownNet = fdops.open("/proc/thread-self/ns/net", O.RDONLY | O.CLOEXEC);
  const host = NlSocket.open();
  let nftTables = false;
  try {
    inNamespacesOf(root, ["net"], () => {
      const sock = NlSocket.open();
      try {
        const links = readLinks(sock);
        const hostId = nsidOf(sock, ownNet);
        for (const s of links) {
          const l = s.link;
          const name = `pid ${root}: network link ${l.name} (index ${l.index})`;
          if (!KINDS_MADE.includes(l.kind)) {
            block(
              `${name} is ${
                s.kind ? `a ${s.kind} link` : "a device of no link kind (a physical one?)"
              }; ckpt makes again only the loopback, veth pairs and dummies: remove it or ` +
                `dump with --empty-ns net and set the namespace up again yourself`,
            );
            continue;
          }
          if (s.master) {
            block(
              `${name} is enslaved to link index ${s.master} (a bridge or bond), not supported`,
            );
            continue;
          }
          if (l.kind === "veth" && s.peerNsid !== undefined) {
            l.peerOutside = true;
            const ext = veths.get(l.name);
            if (s.peerNsid === hostId && s.peerLink) l.peerName = nameOf(host, s.peerLink) ?? "";
            if (!ext) {
              block(
                `${name} is a veth whose other end (${l.peerName || `index ${s.peerLink}`}, ${
                  s.peerNsid === hostId ? "in ckpt's network namespace" : "in another namespace"
                }) is outside the tree: give --external veth[${l.name}]${
                  l.peerName ? "" : ":OUTSIDE_NAME"
                } to have restore make the pair again with that end outside`,
              );
              continue;
            }
            if (ext.outside) l.peerName = ext.outside;
            if (!l.peerName) {
              block(
                `${name}: the name of its outside end is not known (it is in another namespace): ` +
                  `give it as --external veth[${l.name}]:OUTSIDE_NAME`,
              );
            }
            l.peerBridge = ext.bridge ?? "";
          } else if (l.kind === "veth") {
            l.peerIndex = s.peerLink ?? 0;
          }
          img.links.push(l);
        }
        for (
          const [k, field] of [[0, "addrs"], [1, "routes"], [2, "rules"], [
            3,
            "neighbours",
          ]] as const
        ) {
          img[field] = readObjects(sock, OBJECT_KINDS[k]);
        }
        img.sysctls = readSysctls();
      } finally {
        sock.close();
      }
      const nf = openNetfilter();
      try {
        nftTables = hasNftTables(nf);
      } finally {
        nf.close();
      }
    });
  } finally {
    host.close();
    fdops.close(ownNet);
  }
  for (const t of legacyTables(root)) {
    block(
      `pid ${root}: its network namespace has the legacy ${t} table (x_tables); ckpt saves ` +
        `nftables rulesets only (use iptables-nft), or dump with --empty-ns net`,
    );
  }
  if (nftTables) img.nftRuleset = dumpRuleset(root);
  log.debug(
    `network namespace of pid ${root}: ${img.links.length} links, ${img.addrs.length} addresses, ` +
      `${img.routes.length} routes, ${img.sysctls.length} sysctls${
        img.nftRuleset ? ", nftables rules" : ""
      } read in ${(performance.now() - t0).toFixed(1)} ms`,
  );
  return img;
}

/** The key of a --external net[INODE]:KEY naming the root's namespace. */
function externalNet(root: number, external: string[]): string | undefined {
  const ino = Deno.statSync(`/proc/${root}/ns/net`).ino;
  for (const v of external) {
    const m = /^net\[(\d+)\]:(.+)$/.exec(v);
    if (m && Number(m[1]) === ino) return m[2];
  }
  return undefined;
}
