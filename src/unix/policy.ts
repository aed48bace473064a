// The external-peer rules of the brief, in one place: which option lets ckpt
// dump (and later restore) a UNIX socket whose peer is outside the tree. The
// sockets command shows it; dump uses the same functions to refuse with the
// exact option and to accept what the user passed.
import type { UnixSocket } from "./diag.ts";

/** Where a socket's peer lives relative to the dumped tree. */
export type PeerPlace = "inside" | "outside" | "gone" | "none";

/**
 * - `dgram-oneway`: a DGRAM client of a named server that is not dumped; it
 *   is reconnected to the server's name (rule 1).
 * - `stream-server`: a STREAM/SEQPACKET connection to a named listener outside;
 *   it may be cut at dump and reconnected by name at restore (rule 2).
 * - `unnamed-peer`: the peer has no name to reconnect to (a socketpair, an
 *   accepted connection from an unbound client, a DGRAM pair connected both
 *   ways); the caller must hand over a replacement descriptor (rule 3).
 */
export type ExternalKind = "dgram-oneway" | "stream-server" | "unnamed-peer";

export interface Requirement {
  kind: ExternalKind;
  /** The socket's own inode: the ID both options name. */
  inode: number;
  /** What to pass to `ckpt dump`. */
  dump: string;
  /** What to pass to `ckpt restore`. */
  restore: string;
  /** Why, in words, for messages. */
  why: string;
}

/** What policy needs to know about the outside peer. */
export interface PeerFacts {
  /** The peer's diag record, when it is in this network namespace. */
  peer: UnixSocket | undefined;
  /** A listening socket of the same type is bound at the peer's name. */
  listenerAtName: boolean;
}

/** The option an external socket needs (only call it for place "outside"). */
export function requirementFor(sock: UnixSocket, facts: PeerFacts): Requirement {
  const { peer } = facts;
  const ino = sock.inode;
  const unnamed = (why: string): Requirement => ({
    kind: "unnamed-peer",
    inode: ino,
    dump: `--external unix[${ino}]`,
    restore: `--inherit-fd fd[N]:socket:[${ino}]`,
    why,
  });
  if (!peer) return unnamed("its peer is not visible in this network namespace");
  if (peer.name === null) {
    return unnamed("its peer has no name to reconnect to (a socketpair or an unbound client)");
  }
  if (sock.type === "DGRAM") {
    // A DGRAM peer connected back to us would be left talking to a dead socket
    // after restore, so a mutual connection counts as a pair.
    if (peer.peer === ino) {
      return unnamed(`its peer at ${peer.name} is connected back to it, like a socketpair`);
    }
    return {
      kind: "dgram-oneway",
      inode: ino,
      dump: "--ext-unix-sk",
      restore: "--ext-unix-sk",
      why: `it sends datagrams to the server at ${peer.name}, which must exist at restore`,
    };
  }
  if (!facts.listenerAtName) {
    return unnamed(`nothing listens at its peer's name ${peer.name}, so it cannot be reconnected`);
  }
  return {
    kind: "stream-server",
    inode: ino,
    dump: `--ext-unix-sk=${ino}`,
    restore: `--ext-unix-sk=${ino}[=PATH]`,
    why: `it is connected to the server at ${peer.name}; dump disconnects it and restore ` +
      `reconnects it there (or to PATH)`,
  };
}

/** The dump options the user gave that concern external UNIX sockets. */
export interface ExternalOptions {
  /** Values of --ext-unix-sk: "" for the bare option, else an inode. */
  extUnixSk: string[];
  /** Values of --external, e.g. "unix[1234]". */
  external: string[];
}

/** Whether the given options allow dumping a socket with this requirement.
 * Naming the socket (--ext-unix-sk=ID[,ID…] or --external unix[ID]) allows
 * it whatever its kind; the bare --ext-unix-sk only one-way DGRAM clients. */
export function permitted(req: Requirement, opts: ExternalOptions): boolean {
  const ids = opts.extUnixSk.flatMap((v) => v.split(",")).map((v) => v.split("=")[0]);
  if (ids.includes(String(req.inode))) return true;
  if (opts.external.includes(`unix[${req.inode}]`)) return true;
  return req.kind === "dgram-oneway" && opts.extUnixSk.includes("");
}

/** Where a socket is and what it is connected to, for one-line messages. */
export interface SocketWhere {
  pid: number;
  fd: number;
  comm: string;
  socket: UnixSocket;
  peerInode: number | null;
  peerName: string | null;
  /** "pid 42 (name)" of a process holding the peer, when one was found. */
  peerOwner: string | null;
}

/** The refusal dump prints when an external socket was not allowed. */
export function refusal(where: SocketWhere, req: Requirement): string {
  const s = where.socket;
  const peer = [
    `socket ${where.peerInode ?? "?"}`,
    where.peerName ? `at ${where.peerName}` : "(nameless)",
    where.peerOwner ? `held by ${where.peerOwner}` : "",
  ].filter(Boolean).join(" ");
  return `unix ${s.type.toLowerCase()} socket ${s.inode} (pid ${where.pid} ${where.comm}, ` +
    `fd ${where.fd}) is connected to ${peer} outside the tree: ${req.why}; ` +
    `dump it with ${req.dump} and restore with ${req.restore}`;
}
