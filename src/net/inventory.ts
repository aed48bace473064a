// A tree's inet and netlink sockets for `ckpt sockets`: protocol, state,
// addresses, queues, whether a TCP connection's peer is in the tree, the
// connections a listener has not accepted yet, and what dump needs for each
// (--tcp-established, --skip-in-flight) or why it would refuse. Read from
// sock_diag, and for sockets it does not cover (raw, ping) from a copy of
// the descriptor; nothing is frozen or changed.
import { fd as fdops } from "../native/mod.ts";
import { sock, SOL } from "../native/inetsk.ts";
import { addrText } from "./addr.ts";
import { InetTable, NDIAG_FLAG_CB_RUNNING, netlinkDiag, TCP_STATES } from "./diag.ts";
import { isRepairable } from "./tcp_repair.ts";
import { netlinkName, protoName } from "./names.ts";

export interface NetSocketEntry {
  pid: number;
  fd: number;
  comm: string;
  inode: number;
  /** "TCP", "TCP6", "UDP", "UDP-Lite6", "raw IPv4 (protocol 1)", "netlink route"… */
  protocol: string;
  /** TCP states; UDP "connected"/"bound"/"unbound"; netlink "bound"/"unbound". */
  state: string;
  local: string | null;
  peer: string | null;
  rqueue: number | null;
  wqueue: number | null;
  /** A TCP connection's other end: a socket of the tree, or not. */
  peerIs: "inside" | "outside" | null;
  /** Listeners: the clients of connections not accepted yet. */
  pending: string[];
  /** The dump option this socket needs, if any. */
  need: string | null;
  /** Why dump would refuse it whatever the options, if it would. */
  refused: string | null;
}

const SO_TYPE = 3, SO_PROTOCOL = 38, SO_DOMAIN = 39;

/** The network sockets among `fds` (pid, fd, inode) of a tree. */
export function netInventory(
  fds: { pid: number; fd: number; inode: number; comm: string }[],
): NetSocketEntry[] {
  const inet = new InetTable();
  let nl: ReturnType<typeof netlinkDiag> | undefined;
  const tree = new Set(fds.map((f) => f.inode));
  const pidfds = new Map<number, number>();
  const out: NetSocketEntry[] = [];
  try {
    for (const f of fds) {
      const base = {
        pid: f.pid,
        fd: f.fd,
        comm: f.comm,
        inode: f.inode,
        peerIs: null,
        pending: [],
        need: null,
        refused: null,
      };
      const d = inet.byInode.get(f.inode);
      if (d) {
        const e: NetSocketEntry = {
          ...base,
          protocol: protoName(d.family, 0, d.protocol),
          state: d.protocol === 6
            ? TCP_STATES[d.state] ?? String(d.state)
            : d.state === 1
            ? "connected"
            : /:0$/.test(addrText(d.local))
            ? "unbound"
            : "bound",
          local: addrText(d.local),
          peer: d.state === 10 || /:0$/.test(addrText(d.peer)) ? null : addrText(d.peer),
          rqueue: d.rqueue,
          wqueue: d.wqueue,
        };
        if (d.protocol === 6) {
          if (d.state === 10) {
            e.pending = inet.pendingOf(d).map((p) => addrText(p.peer));
            if (e.pending.length) e.need = "--skip-in-flight";
          } else if (isRepairable(d.state)) {
            const p = inet.peerOf(d);
            e.peerIs = p && p.inode && tree.has(p.inode) ? "inside" : "outside";
            e.need = "--tcp-established";
          } else if (d.state !== 7) {
            e.refused = "connect() has not finished";
          }
        }
        out.push(e);
        continue;
      }
      nl ??= netlinkDiag();
      const n = nl.get(f.inode);
      if (n) {
        out.push({
          ...base,
          protocol: netlinkName(n.protocol),
          state: n.portid ? "bound" : "unbound",
          local: n.portid
            ? `port ${n.portid}${n.groups.length ? ` groups ${n.groups.join(",")}` : ""}`
            : null,
          peer: n.dstPortid || n.dstGroup ? `port ${n.dstPortid}` : null,
          rqueue: n.rmem,
          wqueue: null,
          refused: n.flags & NDIAG_FLAG_CB_RUNNING ? "a netlink dump answer is being read" : null,
        });
        continue;
      }
      // Raw and ping sockets: sock_diag for them is not in every kernel.
      let pidfd = pidfds.get(f.pid);
      let copy = -1;
      try {
        if (pidfd === undefined) pidfds.set(f.pid, pidfd = fdops.pidfdOpen(f.pid));
        copy = fdops.pidfdGetfd(pidfd, f.fd);
        const family = sock.getInt(copy, SOL.SOCKET, SO_DOMAIN);
        if (family !== 2 && family !== 10) continue;
        const type = sock.getInt(copy, SOL.SOCKET, SO_TYPE);
        const protocol = sock.getInt(copy, SOL.SOCKET, SO_PROTOCOL);
        const local = sock.name(copy), peer = sock.name(copy, true);
        const queued = (fdops.poll(copy, 1) & 1) !== 0;
        out.push({
          ...base,
          protocol: protoName(family, type, protocol),
          state: peer ? "connected" : "bound",
          local: local ? addrText(local) : null,
          peer: peer ? addrText(peer) : null,
          rqueue: null,
          wqueue: null,
          refused: queued ? "a packet is queued to read" : null,
        });
      } catch {
        // gone meanwhile, or not ours to look at
      } finally {
        if (copy >= 0) fdops.close(copy);
      }
    }
  } finally {
    for (const p of pidfds.values()) fdops.close(p);
  }
  return out;
}
