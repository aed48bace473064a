// listSockets: rule 4 of the brief as a library call — a tree's UNIX sockets,
// which are external, and the options that dump and restore need for them.
import { inventory, type SocketEntry, type SocketInventory } from "../unix/inventory.ts";
import { netInventory, type NetSocketEntry } from "../net/inventory.ts";

export type {
  Holder,
  OtherSocket,
  PeerInfo,
  SocketEntry,
  SocketInventory,
  TreeTask,
} from "../unix/inventory.ts";
export type { UnixSocket, UnixState, UnixType } from "../unix/diag.ts";
export type { ExternalKind, PeerPlace, Requirement } from "../unix/policy.ts";
export type { NetSocketEntry } from "../net/inventory.ts";

export interface SocketReport extends SocketInventory {
  /** The tree's TCP, UDP, raw, ping and netlink sockets. */
  net: NetSocketEntry[];
  summary: {
    total: number;
    inside: number;
    outside: number;
    gone: number;
    unconnected: number;
    /** Every option `ckpt dump` needs for this tree, deduplicated. */
    dumpOptions: string[];
    /** Every option `ckpt restore` needs, in the same order. */
    restoreOptions: string[];
  };
}

function uniq(xs: string[]): string[] {
  return [...new Set(xs)];
}

export function summarize(inv: SocketInventory, net: NetSocketEntry[] = []): SocketReport {
  const count = (p: SocketEntry["peerInfo"]["place"]) =>
    inv.sockets.filter((s) => s.peerInfo.place === p).length;
  // Two descriptors of one socket (shared after fork, dup) need one option.
  const needs = [...new Map(inv.sockets.filter((s) => s.need).map((s) => [s.inode, s.need!]))
    .values()];
  const netNeeds = uniq(net.map((n) => n.need).filter((n): n is string => n !== null));
  const known = new Set(net.map((n) => `${n.pid}/${n.fd}`));
  return {
    ...inv,
    others: inv.others.filter((o) => !known.has(`${o.pid}/${o.fd}`)),
    net,
    summary: {
      total: inv.sockets.length,
      inside: count("inside"),
      outside: count("outside"),
      gone: count("gone"),
      unconnected: count("none"),
      dumpOptions: uniq([...needs.map((n) => n.dump), ...netNeeds]),
      restoreOptions: uniq([
        ...needs.map((n) => n.restore),
        ...netNeeds.filter((n) => n === "--tcp-established"),
      ]),
    },
  };
}

/** Every UNIX socket descriptor of the process tree rooted at pid.
 * Throws NoSuchProcessError when pid does not exist. */
export function listSockets(pid: number): Promise<SocketReport> {
  try {
    const inv = inventory(pid);
    const comm = new Map(inv.tasks.map((t) => [t.pid, t.comm]));
    const net = netInventory(inv.others.map((o) => ({ ...o, comm: comm.get(o.pid) ?? "?" })));
    return Promise.resolve(summarize(inv, net));
  } catch (err) {
    return Promise.reject(err);
  }
}
