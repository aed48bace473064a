// Which UNIX sockets a process tree holds and where each one's peer lives:
// inside the tree, outside it (with who holds it, when /proc shows that), or
// gone. Reads /proc and sock_diag; the option each external socket needs comes
// from policy.ts.
import { CkptError } from "../errors.ts";
import { readUnixSockets, type UnixSocket } from "./diag.ts";
import { type PeerPlace, type Requirement, requirementFor } from "./policy.ts";

export interface Holder {
  pid: number;
  fd: number;
  comm: string;
}

export interface PeerInfo {
  place: PeerPlace;
  /** Peer inode as the kernel reports it (0: closed; null: not connected). */
  inode: number | null;
  type: string | null;
  /** The peer's bound name: for a client of a server, the server's path. */
  name: string | null;
  /** Processes holding the peer: tasks of the tree for "inside", others for "outside". */
  holders: Holder[];
  /** The peer is connected back to this socket (socketpair or accepted connection). */
  mutual: boolean;
  /** Set when the peer is a connection still waiting in a listener's accept queue. */
  pendingOn: { inode: number; name: string | null; holders: Holder[] } | null;
}

/** One descriptor of one task that refers to a UNIX socket. */
export interface SocketEntry extends UnixSocket {
  pid: number;
  fd: number;
  comm: string;
  peerInfo: PeerInfo;
  /** For a listener: clients outside the tree whose connections wait in its
   * accept queue (dump cannot take them along; they are not yet handled). */
  outsideClients: number[];
  /** What dump and restore need for this socket; null when nothing is needed. */
  need: Requirement | null;
}

/** A socket descriptor that is not a UNIX socket of this namespace (TCP, netlink…). */
export interface OtherSocket {
  pid: number;
  fd: number;
  inode: number;
}

export interface TreeTask {
  pid: number;
  ppid: number;
  comm: string;
}

export interface SocketInventory {
  root: number;
  tasks: TreeTask[];
  sockets: SocketEntry[];
  others: OtherSocket[];
}

/** A -t PID that names no process (or names a thread). */
export class NoSuchProcessError extends CkptError {
  constructor(readonly pid: number, detail = "no such process") {
    super(`process ${pid}: ${detail}`);
    this.name = "NoSuchProcessError";
  }
}

function readText(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

function listDir(path: string): string[] {
  try {
    return [...Deno.readDirSync(path)].map((e) => e.name);
  } catch {
    return [];
  }
}

export function comm(pid: number): string {
  return readText(`/proc/${pid}/comm`)?.trimEnd() ?? "?";
}

function statusField(pid: number, key: string): number | null {
  const m = new RegExp(`^${key}:\\s*(\\d+)`, "m").exec(readText(`/proc/${pid}/status`) ?? "");
  return m ? Number(m[1]) : null;
}

/** The tree below root: root first, then children in discovery order. Children
 * of every thread count, since any thread may have forked them. */
export function treeTasks(root: number): TreeTask[] {
  const tgid = statusField(root, "Tgid");
  if (tgid === null) throw new NoSuchProcessError(root);
  if (tgid !== root) {
    throw new NoSuchProcessError(root, `is a thread of process ${tgid}; pass -t ${tgid}`);
  }
  const seen = new Set<number>([root]);
  const out: TreeTask[] = [{ pid: root, ppid: statusField(root, "PPid") ?? 0, comm: comm(root) }];
  for (let i = 0; i < out.length; i++) {
    const pid = out[i].pid;
    for (const tid of listDir(`/proc/${pid}/task`)) {
      const kids = readText(`/proc/${pid}/task/${tid}/children`) ?? "";
      for (const k of kids.split(/\s+/).filter(Boolean).map(Number)) {
        if (seen.has(k)) continue;
        seen.add(k);
        out.push({ pid: k, ppid: pid, comm: comm(k) });
      }
    }
  }
  return out;
}

const SOCKET_LINK = /^socket:\[(\d+)\]$/;

/** fd → socket inode for every socket descriptor of one process. */
export function socketFds(pid: number): { fd: number; inode: number }[] {
  const out: { fd: number; inode: number }[] = [];
  for (const name of listDir(`/proc/${pid}/fd`)) {
    let link: string;
    try {
      link = Deno.readLinkSync(`/proc/${pid}/fd/${name}`);
    } catch {
      continue; // closed meanwhile
    }
    const m = SOCKET_LINK.exec(link);
    if (m) out.push({ fd: Number(name), inode: Number(m[1]) });
  }
  return out.sort((a, b) => a.fd - b.fd);
}

/** Who holds each of `wanted` among all visible processes but `exclude`. */
export function findHolders(wanted: Set<number>, exclude: Set<number>): Map<number, Holder[]> {
  const found = new Map<number, Holder[]>();
  if (wanted.size === 0) return found;
  for (const name of listDir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (exclude.has(pid)) continue;
    for (const { fd, inode } of socketFds(pid)) {
      if (!wanted.has(inode)) continue;
      const list = found.get(inode) ?? [];
      list.push({ pid, fd, comm: comm(pid) });
      found.set(inode, list);
    }
  }
  return found;
}

function sameName(a: UnixSocket, b: UnixSocket): boolean {
  if (a.name === null || a.name !== b.name) return false;
  // A path can be unlinked and bound again: the socket file must be the same.
  return !(a.vfs && b.vfs) || (a.vfs.ino === b.vfs.ino && a.vfs.dev === b.vfs.dev);
}

/** Every UNIX socket descriptor of the tree below root, classified. */
export function inventory(root: number): SocketInventory {
  const tasks = treeTasks(root);
  const all = readUnixSockets();
  const treePids = new Set(tasks.map((t) => t.pid));

  const held: { task: TreeTask; fd: number; sock: UnixSocket }[] = [];
  const others: OtherSocket[] = [];
  const inside = new Map<number, Holder[]>();
  for (const task of tasks) {
    for (const { fd, inode } of socketFds(task.pid)) {
      const sock = all.get(inode);
      if (!sock) {
        others.push({ pid: task.pid, fd, inode });
        continue;
      }
      held.push({ task, fd, sock });
      const list = inside.get(inode) ?? [];
      list.push({ pid: task.pid, fd, comm: task.comm });
      inside.set(inode, list);
    }
  }

  const listeners = [...all.values()].filter((s) => s.state === "LISTEN");
  // A client whose connection is not accepted yet is connected to an embryo
  // socket no process holds; the listener's accept queue names the client.
  const pendingOn = (client: number) => listeners.find((l) => l.pending?.includes(client));

  const wanted = new Set<number>();
  for (const { sock } of held) {
    if (sock.peer === null) continue;
    const l = pendingOn(sock.inode);
    if (l && !inside.has(l.inode)) wanted.add(l.inode);
    else if (sock.peer !== 0 && !inside.has(sock.peer)) wanted.add(sock.peer);
  }
  const outside = findHolders(wanted, treePids);

  const sockets = held.map(({ task, fd, sock }): SocketEntry => {
    const peer = sock.peer ? all.get(sock.peer) : undefined;
    const info: PeerInfo = {
      place: "none",
      inode: sock.peer,
      type: peer?.type ?? null,
      name: peer?.name ?? null,
      holders: [],
      mutual: peer?.peer === sock.inode,
      pendingOn: null,
    };
    let need: Requirement | null = null;
    // Not accepted yet: the peer is an embryo socket with no inode of its own
    // (diag reports 0), and the listener that will accept it is the real peer.
    const l = sock.peer === null ? undefined : pendingOn(sock.inode);
    if (l) {
      const at = inside.get(l.inode);
      info.place = at ? "inside" : "outside";
      info.name = l.name;
      info.type = l.type;
      info.pendingOn = { inode: l.inode, name: l.name, holders: at ?? outside.get(l.inode) ?? [] };
      if (!at) need = requirementFor(sock, { peer: { ...l, peer: null }, listenerAtName: true });
    } else if (sock.peer === 0) {
      info.place = "gone";
    } else if (sock.peer !== null && inside.has(sock.peer)) {
      info.place = "inside";
      info.holders = inside.get(sock.peer)!;
    } else if (sock.peer !== null) {
      info.place = "outside";
      info.holders = outside.get(sock.peer) ?? [];
      need = requirementFor(sock, {
        peer,
        listenerAtName: peer !== undefined &&
          listeners.some((x) => x.type === sock.type && sameName(x, peer)),
      });
    }
    const outsideClients = (sock.pending ?? []).filter((c) => !inside.has(c));
    return { ...sock, pid: task.pid, fd, comm: task.comm, peerInfo: info, outsideClients, need };
  });
  return { root, tasks, sockets, others };
}
