// Rebuilding UNIX sockets inside ckpt, all at once on first use, since they
// depend on each other: pairs are made together, queued messages are sent by
// the socket that owns their sender's name, and pending connections need
// their listener. The restored task inherits the result like any other fd.
//
// Order: create (socketpairs for connected pairs) → bind → listen → connect
// pending clients → fill queues (before any DGRAM connect, which would stop
// others from sending) → connect DGRAM sockets → outside peers → shutdown →
// SO_PASSCRED (only now: set before, it would put ckpt's credentials on
// every message refilled), final buffer sizes, peek offsets, flags.
//
// A name that still led to its socket at dump is bound again there, as the
// task (paths.ts); one unlinked since — replaced by another socket's file,
// or in a directory deleted since — is bound in a private place
// (files/private_place.ts), since only the string is left of it. Either way
// ckpt keeps an O_PATH fd of the socket file and reaches the socket through
// it (connect, sendto to /proc/self/fd/H), never by its path again.
import { type FileEntry, FileKind, UnixPeer, type UnixSocketFile } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import { errnoName } from "../native/errno.ts";
import {
  type Creds,
  MSG,
  showName,
  SHUT_RD,
  SHUT_RDWR,
  SHUT_WR,
  SO,
  SOCK,
  type SocketWant,
  type SockIds,
  SOL_SOCKET,
  unixsk,
} from "../native/unixsk.ts";
import { log } from "../util/log.ts";
import type { Authority } from "../native/creds.ts";
import { addressOf, bindAs, connectAs, resolvedDir, socketIds } from "./paths.ts";
import { PrivatePlace } from "../files/private_place.ts";
import { SenderPids } from "./sender_pids.ts";

const ESRCH = 3;
const TYPE_NAMES: Record<number, string> = { 1: "stream", 2: "dgram", 5: "seqpacket" };
const LISTEN = 10;
/** Room for the queues while they are refilled; the dumped sizes come after. */
const FILL_SNDBUF = 64 << 20;

export interface UnixRestoreOptions {
  /** --ext-unix-sk values: "" (bare), "ID[,ID…]", "ID=PATH", "ID=disconnected". */
  extUnixSk: string[];
  /** --ext-unix-sk-missing: what to do when an outside peer is not there. */
  missing: "fail" | "disconnect";
  /** --inherit-fd keys → ckpt's fd. */
  inherit: Map<string, number>;
  /** The authority every path operation for the socket's holder is done
   * with (its first holder at dump; a socket in flight: the tree's root). */
  authorityOf: (pid: number) => Authority;
}

/** What restore does with a socket whose peer was outside. */
type Plan =
  | { kind: "connect"; to: Uint8Array; resolved: string; option: string }
  | { kind: "disconnected"; why: string };

export function parseExtUnixSkRestore(values: string[]): {
  all: boolean;
  byId: Map<string, string | null>;
} {
  const byId = new Map<string, string | null>();
  let all = false;
  for (const v of values) {
    if (v === "") {
      all = true;
      continue;
    }
    const eq = v.indexOf("=");
    if (eq > 0) byId.set(v.slice(0, eq), v.slice(eq + 1));
    else for (const id of v.split(",")) byId.set(id, null);
  }
  return { all, byId };
}

/** A map by socket inode (a uint64, a BigInt in messages): kept by number,
 * which ten thousand sockets look up several times each far faster. */
class ByIno<T> {
  private readonly m = new Map<number, T>();
  get(ino: bigint | number): T | undefined {
    return this.m.get(Number(ino));
  }
  has(ino: bigint | number): boolean {
    return this.m.has(Number(ino));
  }
  set(ino: bigint | number, v: T): void {
    this.m.set(Number(ino), v);
  }
  delete(ino: bigint | number): void {
    this.m.delete(Number(ino));
  }
  values(): IterableIterator<T> {
    return this.m.values();
  }
  clear(): void {
    this.m.clear();
  }
  [Symbol.iterator](): IterableIterator<[number, T]> {
    return this.m[Symbol.iterator]();
  }
}

export class UnixSockets {
  private readonly socks: UnixSocketFile[];
  private readonly byIno = new ByIno<UnixSocketFile>();
  /** ckpt's descriptor for each socket, by inode. */
  private readonly fds = new ByIno<number>();
  /** For sockets made with socketpair: the other end. */
  private readonly pairOf = new ByIno<number>();
  /** Sockets whose gone peer was made as a pair end, then closed. */
  private readonly madeAsPair = new ByIno<true>();
  private readonly temps: number[] = [];
  /** Accepted sockets with abstract names, and the client fd to accept them from. */
  private readonly toAccept: {
    accepted: UnixSocketFile;
    client: number;
    from: UnixSocketFile | number;
    /** The connecting end's ids (what the accepted end sees as its peer). */
    ids?: SockIds;
  }[] = [];
  /** Listeners ckpt holds an abstract name with until acceptAgain. */
  private readonly tempListeners = new Map<string, number>();
  /** O_PATH fds of the socket files of path names ckpt bound, by inode. */
  private readonly handles = new Map<bigint, number>();
  private readonly place = new PrivatePlace();
  private readonly senderPids = new SenderPids();
  /** The socket each sender name's queued datagrams are sent from. */
  private readonly senders = new Map<string, number>();
  private built = false;
  private building = false;
  private readonly ext: ReturnType<typeof parseExtUnixSkRestore>;

  constructor(
    entries: Map<number, FileEntry>,
    private readonly opts: UnixRestoreOptions,
    /** ckpt's fd for file `id` (descriptors in flight in queues). */
    private readonly file: (id: number, where: string) => number,
  ) {
    this.socks = [...entries.values()]
      .filter((e) => e.kind === FileKind.FILE_UNIX && e.unix)
      .map((e) => e.unix!);
    for (const s of this.socks) this.byIno.set(s.ino, s);
    this.ext = parseExtUnixSkRestore(opts.extUnixSk);
  }

  /** A fresh descriptor for the socket of entry f (closed by the caller). */
  open(f: FileEntry, where: string): number {
    const s = f.unix;
    if (!s) throw new RestoreError(`${where}: files.img entry ${f.id} has no socket data`);
    if (!this.built) {
      this.built = true;
      this.building = true;
      try {
        this.build();
      } finally {
        this.building = false;
      }
    }
    const n = this.fds.get(s.ino);
    if (n === undefined) throw new RestoreError(`${where}: socket ${s.ino} was not rebuilt`);
    // Once every socket is built it is handed over, not duplicated: one fd
    // per socket in ckpt, so a tree with half as many sockets as ckpt's fd
    // limit still restores. One wanted while building (sent in a queue) is
    // a copy: the build still needs it.
    if (this.building) return fdops.dupAbove(n, 100);
    this.fds.delete(s.ino);
    return n;
  }

  closeAll(): void {
    this.releaseBuildState();
    fdops.closeAll([...this.fds.values(), ...this.pairOf.values(), ...this.temps]);
    this.fds.clear();
    this.pairOf.clear();
    this.temps.length = 0;
  }

  private inherited(s: UnixSocketFile): number | undefined {
    return this.opts.inherit.size ? this.opts.inherit.get(`socket:[${s.ino}]`) : undefined;
  }

  private desc(s: UnixSocketFile): string {
    return `unix ${TYPE_NAMES[s.type] ?? s.type} socket ${s.ino} (pid ${s.pid} fd ${s.fd})`;
  }

  private build(): void {
    // Outside peers are checked first: a missing option fails before anything is made.
    const plans = new Map<bigint, Plan>();
    for (const s of this.socks) {
      if (isExternal(s) && this.inherited(s) === undefined) plans.set(s.ino, this.planFor(s));
    }
    const t0 = performance.now();
    try {
      this.create();
      this.bindAll();
      for (const s of this.socks) {
        if (s.state === LISTEN && this.fds.has(s.ino)) {
          unixsk.listen(this.fd(s), s.backlog, this.ids(s));
        }
      }
      this.acceptAgain();
      this.connectPending();
      this.fillQueues(plans);
    } finally {
      // Before the tree is forked: the pids held for senders are its own.
      this.senderPids.releaseAll();
    }
    this.connectDgrams();
    this.connectOutside(plans);
    this.releaseBuildState();
    this.finishState();
    log.debug(`unix sockets rebuilt in ${(performance.now() - t0).toFixed(1)} ms`);
  }

  private releaseBuildState(): void {
    this.senderPids.releaseAll();
    this.senders.clear();
    for (const h of this.handles.values()) fdops.close(h);
    this.handles.clear();
    for (const t of this.tempListeners.values()) fdops.close(t);
    this.tempListeners.clear();
    this.toAccept.length = 0;
    this.place.close();
  }

  /** The address ckpt reaches a socket of the tree at: its socket file's
   * O_PATH fd, or its abstract name; undefined when it has neither. */
  private reach(t: UnixSocketFile): Uint8Array | undefined {
    const h = this.handles.get(t.ino);
    if (h !== undefined) return addressOf(h);
    return t.name.length && t.name[0] === 0 ? t.name : undefined;
  }

  /** connect(2) of s to t, a socket of the tree: through t's own file, as
   * ckpt (that socket is the one ckpt just made for the tree, and s was
   * connected to it at dump), or, for a name ckpt did not bind (t came by
   * --inherit-fd), by its path as the task. 0 or the errno. */
  private connectTo(s: UnixSocketFile, t: UnixSocketFile): number {
    const addr = this.reach(t);
    if (addr) return unixsk.tryConnect(this.fd(s), addr, this.ids(s));
    return connectAs(this.auth(s), this.fd(s), t.name, t.nameDir, this.desc(s));
  }

  /** The ids s is connected or made to listen with (its peer's
   * SO_PEERCRED): its task's. */
  private ids(s: UnixSocketFile): SockIds | undefined {
    return socketIds(this.auth(s));
  }

  /** A pair's two ends get one set of peer credentials, the maker's: the
   * tasks' when they have the same, otherwise the one that is not root's
   * (the root end then sees less than it did, never the other way). */
  private pairIds(s: UnixSocketFile, peer: UnixSocketFile): SockIds | undefined {
    const a = this.ids(s), b = this.ids(peer);
    return a ?? b;
  }

  private auth(s: UnixSocketFile): Authority {
    return this.opts.authorityOf(s.pid);
  }

  private fd(s: UnixSocketFile): number {
    const n = this.fds.get(s.ino);
    if (n === undefined) throw new RestoreError(`${this.desc(s)} was not created`);
    return n;
  }

  private planFor(s: UnixSocketFile): Plan {
    const id = String(s.ino);
    const given = this.ext.byId.get(id);
    const path = s.peerName.length ? showName(s.peerName) : "nameless";
    const options = s.peer === UnixPeer.EXT_DGRAM
      ? `--ext-unix-sk`
      : s.peer === UnixPeer.EXT_SERVER
      ? `--ext-unix-sk=${id}[=PATH]`
      : `--inherit-fd fd[N]:socket:[${id}]`;
    if (given === "disconnected") {
      return { kind: "disconnected", why: `--ext-unix-sk=${id}=disconnected` };
    }
    if (given) {
      // A path the operator gives is taken with the symlinks it has now
      // (still looked up as the task).
      return {
        kind: "connect",
        to: new TextEncoder().encode(given),
        resolved: resolvedDir(given),
        option: `--ext-unix-sk=${id}=${given}`,
      };
    }
    const named = s.peerName.length > 0 && s.peer !== UnixPeer.EXT_UNNAMED;
    if (given === null && named) {
      return {
        kind: "connect",
        to: s.peerName,
        resolved: s.peerDir,
        option: `--ext-unix-sk=${id}`,
      };
    }
    // Without an option for it, a dump that succeeded still restores (the
    // dump's --ext-unix-sk or --external was the operator's word): a named
    // peer is reconnected at its dump-time path, a nameless one cannot be
    // and comes back gone, as an outside pipe end does.
    if (named) {
      return {
        kind: "connect",
        to: s.peerName,
        resolved: s.peerDir,
        option: this.ext.all ? "--ext-unix-sk" : "its dump-time path",
      };
    }
    if (this.opts.missing !== "disconnect") {
      log.warn(
        `${this.desc(s)} had its peer outside the tree (${path}): restored as a socket whose ` +
          `peer is gone; restore with ${options} to give it one`,
      );
    }
    return { kind: "disconnected", why: `no ${options}` };
  }

  private create(): void {
    // What each socket is made as is decided here; the common ones are
    // then made in one native call (a server has tens of thousands).
    const plan: { s: UnixSocketFile; as: "mutual" | "gone" | "single"; peer?: UnixSocketFile }[] =
      [];
    const planned = new ByIno<true>();
    const taken = (ino: bigint) => this.fds.has(ino) || planned.has(ino);
    for (const s of this.socks) {
      if (taken(s.ino)) continue;
      const own = this.inherited(s);
      if (own !== undefined) {
        this.fds.set(s.ino, fdops.dupAbove(own, 100));
        continue;
      }
      const peer = this.byIno.get(s.peerIno);
      // A socket connected to itself (a DGRAM socket that connected to its
      // own name) is no pair: it is connected once it is bound.
      const mutual = s.peer === UnixPeer.INSIDE && peer !== undefined && peer.peerIno === s.ino &&
        peer.ino !== s.ino && !taken(peer.ino) && this.inherited(peer) === undefined;
      const streamy = s.type !== 2;
      const accepted = mutual ? [s, peer].find(acceptedAbstract) : undefined;
      const from = accepted && this.acceptorFor(accepted);
      const fromGone = !mutual && s.peer === UnixPeer.GONE && streamy && acceptedAbstract(s)
        ? this.acceptorFor(s)
        : undefined;
      if (accepted && from !== undefined) {
        // Made by accept(2) later on (acceptAgain): the only way for an
        // accepted socket to have an abstract name its listener holds.
        this.fds.set(s.ino, unixsk.socket(s.type));
        this.fds.set(peer!.ino, unixsk.socket(s.type));
        const client = accepted === s ? peer! : s;
        this.toAccept.push({ accepted, client: this.fd(client), from, ids: this.ids(client) });
      } else if (mutual) {
        const ids = this.pairIds(s, peer);
        planned.set(s.ino, true);
        planned.set(peer.ino, true);
        if (ids) {
          // A user's pair carries the user's credentials (SO_PEERCRED): made
          // as them, outside the batch (which makes root's).
          const [a, b] = unixsk.pair(s.type, ids);
          this.fds.set(s.ino, a);
          this.fds.set(peer.ino, b);
        } else plan.push({ s, as: "mutual", peer });
      } else if (fromGone !== undefined) {
        this.fds.set(s.ino, unixsk.socket(s.type));
        const b = unixsk.socket(s.type);
        this.pairOf.set(s.ino, b);
        this.madeAsPair.set(s.ino, true);
        this.toAccept.push({ accepted: s, client: b, from: fromGone, ids: this.ids(s) });
      } else if (s.peer === UnixPeer.GONE && (streamy || (s.queue.length && !s.name.length))) {
        // The peer end is kept to fill the queue, then closed: the task reads
        // what was queued and then sees the connection end (a DGRAM socket
        // without a name can only have been sent to by that peer, and after
        // it is gone a send fails with ECONNREFUSED, as it did).
        planned.set(s.ino, true);
        const ids = this.ids(s);
        if (ids) {
          const [a, b] = unixsk.pair(s.type, ids);
          this.fds.set(s.ino, a);
          this.pairOf.set(s.ino, b);
          this.madeAsPair.set(s.ino, true);
        } else plan.push({ s, as: "gone" });
      } else {
        planned.set(s.ino, true);
        plan.push({ s, as: "single" });
      }
    }
    const made = unixsk.make(plan.map((p) => p.s.type), plan.map((p) => p.as !== "single"));
    plan.forEach(({ s, as, peer }, i) => {
      const [a, b] = made[i];
      this.fds.set(s.ino, a);
      if (as === "mutual") this.fds.set(peer!.ino, b);
      if (as === "gone") {
        this.pairOf.set(s.ino, b);
        this.madeAsPair.set(s.ino, true);
      }
    });
    // Before the queues are filled: a receiver's buffer. The final sizes
    // and SO_PASSCRED come in finishState.
    this.setOptions(
      this.socks.filter((s) => s.rcvbuf && this.inherited(s) === undefined)
        .map((s) => ({ s, want: { fd: this.fd(s), rcvbuf: s.rcvbuf } })),
    );
  }

  /** Sets the options of many sockets in one native call. */
  private setOptions(wants: { s: UnixSocketFile; want: SocketWant }[]): void {
    if (!wants.length) return;
    const { failed, errno } = unixsk.set(wants.map((w) => w.want));
    if (failed >= 0) {
      throw new RestoreError(
        `${this.desc(wants[failed].s)}: cannot set its socket options: ${errnoName(errno)}`,
      );
    }
  }

  private bindAll(): void {
    for (const s of this.socks) {
      if (!s.name.length || this.inherited(s) !== undefined) continue;
      const n = this.fd(s);
      if (s.nameBorrowed) {
        // An accepted socket shows its listener's name (getsockname, and
        // getpeername at the other end): bound to that string where its
        // file reaches nobody; the listener keeps the path. Abstract ones
        // are accepted again instead (acceptAgain).
        if (s.name[0] !== 0) fdops.close(this.bindPrivately(n, s.name, s));
        continue;
      }
      if (s.name[0] === 0) {
        try {
          unixsk.bind(n, s.name);
        } catch (err) {
          throw new RestoreError(
            `${this.desc(s)}: cannot bind ${showName(s.name)}: ${(err as Error).message}`,
          );
        }
        continue;
      }
      if (s.nameUnlinked) {
        this.handles.set(s.ino, this.bindPrivately(n, s.name, s));
        continue;
      }
      this.handles.set(
        s.ino,
        bindAs(this.auth(s), n, {
          path: showName(s.name),
          resolved: s.nameDir,
          owner: { uid: s.fileUid, gid: s.fileGid, mode: s.fileMode },
        }, this.desc(s)),
      );
    }
  }

  /** A name no path led to at dump, bound where nobody else can see it
   * (the path may belong to another socket now, or its directory be gone). */
  private bindPrivately(n: number, name: Uint8Array, s: UnixSocketFile): number {
    try {
      return this.place.bind(n, name, this.desc(s));
    } catch (err) {
      if (err instanceof RestoreError) throw err;
      throw new RestoreError(
        `${this.desc(s)}: cannot bind ${showName(name)} (unlinked since) again: ` +
          `${(err as Error).message}`,
      );
    }
  }

  /** Where accepted socket `a` (abstract name) can be accepted again from:
   * the tree's listener that will hold the name, or a listener ckpt binds
   * to it now and keeps until acceptAgain; undefined when the name is
   * another socket's (restored then as before, without the name). */
  private acceptorFor(a: UnixSocketFile): UnixSocketFile | number | undefined {
    const holder = this.socks.find((o) =>
      !o.nameBorrowed && o.type === a.type && equal(o.name, a.name) &&
      this.inherited(o) === undefined
    );
    if (holder?.state === LISTEN) return holder;
    const key = `${a.type}:${String.fromCharCode(...a.name)}`;
    let temp = holder ? undefined : this.tempListeners.get(key);
    if (!holder && temp === undefined) {
      const t = unixsk.socket(a.type);
      try {
        unixsk.bind(t, a.name);
        unixsk.listen(t, 1, this.ids(a));
        this.tempListeners.set(key, t);
        temp = t;
      } catch {
        fdops.close(t);
      }
    }
    if (temp === undefined) {
      log.warn(
        `${this.desc(a)}: restored without its name ${showName(a.name)} (another socket has it)`,
      );
    }
    return temp;
  }

  /** Accepted connections on abstract names, made again by connecting to
   * the name and accepting (before any client waits in accept(), so the
   * connection taken is the one just made). */
  private acceptAgain(): void {
    try {
      for (const { accepted: a, client, from, ids } of this.toAccept) {
        try {
          unixsk.connect(client, a.name, ids);
          const n = unixsk.acceptReady(typeof from === "number" ? from : this.fd(from));
          fdops.close(this.fd(a));
          this.fds.set(a.ino, n);
          if (a.rcvbuf) unixsk.setInt(n, SOL_SOCKET, SO.RCVBUFFORCE, a.rcvbuf >> 1);
        } catch (err) {
          throw new RestoreError(
            `${this.desc(a)}: cannot accept its connection on ${showName(a.name)} again: ` +
              `${(err as Error).message}`,
          );
        }
      }
    } finally {
      this.toAccept.length = 0;
      for (const t of this.tempListeners.values()) fdops.close(t);
      this.tempListeners.clear();
    }
  }

  /** Clients waiting in accept() connect again, in their dumped order. */
  private connectPending(): void {
    for (const l of this.socks) {
      if (l.state !== LISTEN || !this.fds.has(l.ino)) continue;
      for (const c of l.pending) {
        const s = this.byIno.get(c);
        if (!s || this.inherited(s) !== undefined) continue;
        const errno = this.connectTo(s, l);
        if (errno !== 0) {
          throw new RestoreError(
            `${this.desc(s)}: cannot connect to its listener ${showName(l.name)} again: ` +
              `connect: ${errnoName(errno)}`,
          );
        }
      }
    }
  }

  private fillQueues(plans: Map<bigint, Plan>): void {
    for (const s of this.socks) {
      if (!s.queue.length || this.inherited(s) !== undefined) continue;
      if (s.type !== 2) {
        if (plans.has(s.ino)) continue; // outside peer: see connectOutside
        const from = this.pairOf.get(s.ino) ??
          (s.peer === UnixPeer.INSIDE ? this.fds.get(s.peerIno) : undefined);
        if (from === undefined) {
          log.warn(`${this.desc(s)}: its queued data has no sender to put it back`);
          continue;
        }
        this.fillStream(s, from);
        continue;
      }
      const pairPeer = this.pairOf.get(s.ino) ??
        (s.peer === UnixPeer.INSIDE && s.peerIno !== s.ino &&
            this.byIno.get(s.peerIno)?.peerIno === s.ino
          ? this.fds.get(s.peerIno)
          : undefined);
      for (const m of s.queue) {
        const fds = this.filesOf(m.fileIds, s);
        if (pairPeer !== undefined) {
          this.raiseSndbuf(pairPeer);
          this.sendAll(pairPeer, m.data, null, fds, s, false, m.creds);
          continue;
        }
        const to = this.reach(s);
        if (!to) {
          // Refused at dump: nothing but a socketpair peer can send to it.
          throw new RestoreError(`${this.desc(s)}: a queued datagram has no way back in`);
        }
        const sender = this.senderFor(m.sender, s);
        this.sendAll(sender, m.data, to, fds, s, false, m.creds);
      }
    }
    // Peers of connections whose other end was gone: closed once the queue is in.
    for (const [ino, b] of this.pairOf) {
      fdops.close(b);
      this.pairOf.delete(ino);
    }
  }

  private fillStream(s: UnixSocketFile, from: number): void {
    this.raiseSndbuf(from);
    for (const m of s.queue) {
      this.sendAll(from, m.data, null, this.filesOf(m.fileIds, s), s, s.type === 1, m.creds);
    }
  }

  private raiseSndbuf(n: number): void {
    unixsk.setInt(n, SOL_SOCKET, SO.SNDBUFFORCE, FILL_SNDBUF);
  }

  private filesOf(ids: number[], s: UnixSocketFile): number[] {
    return ids.map((id) => this.file(id, `a descriptor in flight in ${this.desc(s)}`));
  }

  /** A socket to send a datagram from so that it carries `name` as its
   * sender: the restored socket bound there, or a temporary one. */
  private senderFor(name: Uint8Array, s: UnixSocketFile): number {
    const key = String.fromCharCode(...name);
    const known = this.senders.get(key);
    if (known !== undefined) return known;
    const t = this.makeSender(name, s);
    this.raiseSndbuf(t);
    this.senders.set(key, t);
    return t;
  }

  private makeSender(name: Uint8Array, s: UnixSocketFile): number {
    if (name.length) {
      const owner = this.socks.find((o) =>
        !o.nameBorrowed && o.type === 2 && this.fds.has(o.ino) && equal(o.name, name)
      );
      if (owner) return this.fd(owner);
    }
    const t = unixsk.socket(SOCK.DGRAM);
    this.temps.push(t);
    if (!name.length) return t;
    // The address stays on the messages; a path name is bound where its
    // file reaches nobody (the path may be another socket's now).
    if (name[0] !== 0) {
      fdops.close(this.bindPrivately(t, name, s));
      return t;
    }
    try {
      unixsk.bind(t, name);
    } catch {
      log.warn(
        `${this.desc(s)}: a queued datagram from ${showName(name)} is restored without its ` +
          `sender address: that name is in use outside the tree`,
      );
    }
    return t;
  }

  /** Sends one queued message (all of it, for a stream) from `from`,
   * directly to `to` (an address reach() gave) or to its peer, carrying the
   * credentials it had (their pid made to exist for the send). */
  private sendAll(
    from: number,
    data: Uint8Array,
    to: Uint8Array | null,
    fds: number[],
    s: UnixSocketFile,
    stream: boolean,
    creds?: Creds,
  ): void {
    try {
      let off = this.sendOne(from, data, to, fds, creds);
      while (stream && off < data.length) {
        off += this.sendOne(from, data.subarray(off), null, [], creds);
      }
    } catch (err) {
      if (err instanceof RestoreError) throw err;
      throw new RestoreError(
        `${this.desc(s)}: cannot put its queued data back: ${(err as Error).message}`,
      );
    }
  }

  private sendOne(
    from: number,
    data: Uint8Array,
    to: Uint8Array | null,
    fds: number[],
    creds?: Creds,
  ): number {
    if (!creds) return unixsk.send(from, data, to, fds, MSG.DONTWAIT);
    this.senderPids.ensure(creds.pid);
    try {
      return unixsk.send(from, data, to, fds, MSG.DONTWAIT, creds);
    } catch (err) {
      if (!(err instanceof NativeError && err.errno === ESRCH)) throw err;
      // Its holder exited meanwhile.
      this.senderPids.lost(creds.pid);
      return unixsk.send(from, data, to, fds, MSG.DONTWAIT, creds);
    }
  }

  private connectDgrams(): void {
    for (const s of this.socks) {
      if (s.type === 2 && s.peer === UnixPeer.GONE && this.inherited(s) === undefined) {
        if (!this.madeAsPair.has(s.ino)) this.disconnect(s);
        continue;
      }
      if (s.type !== 2 || s.peer !== UnixPeer.INSIDE || this.inherited(s) !== undefined) continue;
      const peer = this.byIno.get(s.peerIno);
      // A socketpair is connected from birth.
      if (!peer || (peer.peerIno === s.ino && peer.ino !== s.ino)) continue;
      if (!peer.name.length) {
        throw new RestoreError(`${this.desc(s)} is connected to a socket without a name`);
      }
      const errno = this.connectTo(s, peer);
      if (errno !== 0) {
        throw new RestoreError(
          `${this.desc(s)}: cannot connect to ${showName(peer.name)} again: ` +
            `connect: ${errnoName(errno)}`,
        );
      }
    }
  }

  private connectOutside(plans: Map<bigint, Plan>): void {
    for (const s of this.socks) {
      const plan = plans.get(s.ino);
      if (!plan) continue;
      const n = this.fd(s);
      if (plan.kind === "connect") {
        const errno = connectAs(this.auth(s), n, plan.to, plan.resolved, this.desc(s));
        if (errno === 0) {
          log.info(`${this.desc(s)}: reconnected to ${showName(plan.to)} (${plan.option})`);
          if (s.type !== 2 && s.queue.length) {
            const bytes = s.queue.reduce((a, m) => a + m.data.length, 0);
            log.warn(
              `${this.desc(s)}: ${bytes} bytes its old peer had sent and it had not read are ` +
                `lost: only the new peer can fill its queue`,
            );
          }
          continue;
        }
        const id = String(s.ino);
        if (this.opts.missing !== "disconnect") {
          throw new RestoreError(
            `${this.desc(s)}: its outside peer ${showName(plan.to)} is not there ` +
              `(connect: ${errnoName(errno)}); start it, pass --ext-unix-sk=${id}=PATH for ` +
              `another path, or restore with --ext-unix-sk=${id}=disconnected ` +
              `(or --ext-unix-sk-missing=disconnect)`,
          );
        }
        log.warn(`${this.desc(s)}: ${showName(plan.to)} is not there; restored disconnected`);
        this.disconnect(s);
      } else {
        log.info(`${this.desc(s)}: restored without its peer (${plan.why})`);
        this.disconnect(s);
      }
    }
  }

  /** Makes s look like a socket whose peer went away: a DGRAM socket is
   * connected to a socket that is then closed (next send: ECONNREFUSED); a
   * STREAM/SEQPACKET one is swapped for one end of a pair whose other end is
   * closed (EOF, then EPIPE). */
  private disconnect(s: UnixSocketFile): void {
    const old = this.fd(s);
    if (s.type !== 2) {
      const [a, b] = unixsk.pair(s.type, this.ids(s));
      try {
        this.fillStream(s, b);
      } finally {
        fdops.close(b);
      }
      fdops.close(old);
      this.fds.set(s.ino, a);
      if (s.name.length && !s.nameBorrowed) {
        log.warn(`${this.desc(s)}: restored disconnected without its name ${showName(s.name)}`);
      }
      return;
    }
    const dir = Deno.makeTempDirSync({ prefix: "ckpt-gone-" });
    const t = unixsk.socket(SOCK.DGRAM);
    try {
      const name = new TextEncoder().encode(`${dir}/peer`);
      unixsk.bind(t, name);
      unixsk.connect(old, name);
    } finally {
      fdops.close(t);
      Deno.removeSync(dir, { recursive: true });
    }
  }

  private finishState(): void {
    const wants: { s: UnixSocketFile; want: SocketWant }[] = [];
    for (const s of this.socks) {
      if (this.inherited(s) !== undefined) continue;
      const n = this.fd(s);
      if (s.shutdown && !isGone(s)) {
        const how = s.shutdown === 3 ? SHUT_RDWR : s.shutdown === 1 ? SHUT_RD : SHUT_WR;
        try {
          unixsk.shutdown(n, how);
        } catch (err) {
          if (!(err instanceof NativeError)) throw err; // not connected: nothing to shut
        }
      }
      wants.push({
        s,
        want: {
          fd: n,
          passcred: s.passcred,
          sndbuf: s.sndbuf,
          rcvbuf: s.rcvbuf,
          peekOff: s.peekOff,
          nonblock: (s.flags & O.NONBLOCK) !== 0,
        },
      });
    }
    this.setOptions(wants);
  }
}

function isExternal(s: UnixSocketFile): boolean {
  return s.peer === UnixPeer.EXT_DGRAM || s.peer === UnixPeer.EXT_SERVER ||
    s.peer === UnixPeer.EXT_UNNAMED;
}

function isGone(s: UnixSocketFile): boolean {
  return s.peer === UnixPeer.GONE && s.type !== 2;
}

/** An accepted socket (its name is its listener's) with an abstract name. */
function acceptedAbstract(s: UnixSocketFile | undefined): boolean {
  return !!s && s.nameBorrowed && s.name.length > 0 && s.name[0] === 0;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
