// Rebuilding UNIX sockets inside ckpt, all at once on first use, since they
// depend on each other: pairs are made together, queued messages are sent by
// the socket that owns their sender's name, and pending connections need
// their listener. The restored task inherits the result like any other fd.
//
// Order: create (socketpairs for connected pairs) → bind → listen → connect
// pending clients → fill queues (before any DGRAM connect, which would stop
// others from sending) → connect DGRAM sockets → outside peers → unlink names
// that were unlinked → shutdown → final buffer sizes, peek offsets, flags.
import { type FileEntry, FileKind, UnixPeer, type UnixSocketFile } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import { errnoName } from "../native/errno.ts";
import {
  MSG,
  showName,
  SHUT_RD,
  SHUT_RDWR,
  SHUT_WR,
  SO,
  SOCK,
  SOL_SOCKET,
  unixsk,
} from "../native/unixsk.ts";
import { log } from "../util/log.ts";
import type { Authority } from "../native/creds.ts";
import { bindAs, connectAs, resolvedDir, sendToAs, unlinkBoundAs } from "./paths.ts";

const F_SETFL = 4;
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

export class UnixSockets {
  private readonly socks: UnixSocketFile[];
  private readonly byIno = new Map<bigint, UnixSocketFile>();
  /** ckpt's descriptor for each socket, by inode. */
  private readonly fds = new Map<bigint, number>();
  /** For sockets made with socketpair: the other end. */
  private readonly pairOf = new Map<bigint, number>();
  /** Sockets whose gone peer was made as a pair end, then closed. */
  private readonly madeAsPair = new Set<bigint>();
  private readonly temps: number[] = [];
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
    for (const n of [...this.fds.values(), ...this.pairOf.values(), ...this.temps]) {
      fdops.close(n);
    }
    this.fds.clear();
    this.pairOf.clear();
    this.temps.length = 0;
  }

  private inherited(s: UnixSocketFile): number | undefined {
    return this.opts.inherit.get(`socket:[${s.ino}]`);
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
    this.create();
    this.bindAll();
    for (const s of this.socks) {
      if (s.state === LISTEN && this.fds.has(s.ino)) unixsk.listen(this.fd(s), s.backlog);
    }
    this.connectPending();
    this.fillQueues(plans);
    this.connectDgrams();
    this.connectOutside(plans);
    for (const s of this.socks) {
      if (s.nameUnlinked && s.name.length && s.name[0] !== 0 && this.fds.has(s.ino)) {
        if (s.nameBorrowed || this.inherited(s) !== undefined) continue;
        unlinkBoundAs(this.auth(s), this.fd(s), showName(s.name), s.nameDir, this.desc(s));
      }
    }
    this.finishState();
    log.debug(`unix sockets rebuilt in ${(performance.now() - t0).toFixed(1)} ms`);
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
    for (const s of this.socks) {
      if (this.fds.has(s.ino)) continue;
      const own = this.inherited(s);
      if (own !== undefined) {
        this.fds.set(s.ino, fdops.dupAbove(own, 100));
        continue;
      }
      const peer = this.byIno.get(s.peerIno);
      // A socket connected to itself (a DGRAM socket that connected to its
      // own name) is no pair: it is connected once it is bound.
      const mutual = s.peer === UnixPeer.INSIDE && peer !== undefined && peer.peerIno === s.ino &&
        peer.ino !== s.ino && !this.fds.has(peer.ino) && this.inherited(peer) === undefined;
      const streamy = s.type !== 2;
      if (mutual) {
        const [a, b] = unixsk.pair(s.type);
        this.fds.set(s.ino, a);
        this.fds.set(peer.ino, b);
      } else if (s.peer === UnixPeer.GONE && (streamy || (s.queue.length && !s.name.length))) {
        // The peer end is kept to fill the queue, then closed: the task reads
        // what was queued and then sees the connection end (a DGRAM socket
        // without a name can only have been sent to by that peer, and after
        // it is gone a send fails with ECONNREFUSED, as it did).
        const [a, b] = unixsk.pair(s.type);
        this.fds.set(s.ino, a);
        this.pairOf.set(s.ino, b);
        this.madeAsPair.add(s.ino);
      } else {
        this.fds.set(s.ino, unixsk.socket(s.type));
      }
    }
    for (const s of this.socks) {
      if (this.inherited(s) !== undefined) continue;
      const n = this.fd(s);
      if (s.passcred) unixsk.setInt(n, SOL_SOCKET, SO.PASSCRED, 1);
      if (s.rcvbuf && unixsk.getInt(n, SOL_SOCKET, SO.RCVBUF) !== s.rcvbuf) {
        unixsk.setInt(n, SOL_SOCKET, SO.RCVBUFFORCE, s.rcvbuf >> 1);
      }
    }
  }

  private bindAll(): void {
    // A name that was unlinked goes first: a later socket may own the path now.
    const order = [...this.socks].sort((a, b) => Number(b.nameUnlinked) - Number(a.nameUnlinked));
    for (const s of order) {
      if (!s.name.length || s.nameBorrowed || this.inherited(s) !== undefined) continue;
      const n = this.fd(s);
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
      bindAs(this.auth(s), n, {
        path: showName(s.name),
        resolved: s.nameDir,
        owner: s.nameUnlinked ? undefined : { uid: s.fileUid, gid: s.fileGid, mode: s.fileMode },
        unlinkAfter: false,
        freeStale: true,
      }, this.desc(s));
    }
  }

  /** Clients waiting in accept() connect again, in their dumped order. */
  private connectPending(): void {
    for (const l of this.socks) {
      if (l.state !== LISTEN || !this.fds.has(l.ino)) continue;
      for (const c of l.pending) {
        const s = this.byIno.get(c);
        if (!s || this.inherited(s) !== undefined) continue;
        const errno = connectAs(this.auth(s), this.fd(s), l.name, l.nameDir, this.desc(s));
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
          this.sendAll(pairPeer, m.data, null, fds, s, false);
          continue;
        }
        if (!s.name.length) {
          // Refused at dump: nothing but a socketpair peer can send to it.
          throw new RestoreError(`${this.desc(s)}: a queued datagram has no way back in`);
        }
        const sender = this.senderFor(m.sender, s);
        this.sendAll(sender, m.data, s.name, fds, s, false, s.nameDir);
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
      this.sendAll(from, m.data, null, this.filesOf(m.fileIds, s), s, s.type === 1);
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
    if (name.length) {
      const owner = this.socks.find((o) =>
        !o.nameBorrowed && o.type === 2 && this.fds.has(o.ino) && equal(o.name, name)
      );
      if (owner) {
        this.raiseSndbuf(this.fd(owner));
        return this.fd(owner);
      }
    }
    const t = unixsk.socket(SOCK.DGRAM);
    this.temps.push(t);
    this.raiseSndbuf(t);
    if (!name.length) return t;
    try {
      // The address stays on the messages; the file goes at once.
      if (name[0] === 0) unixsk.bind(t, name);
      else {
        bindAs(this.auth(s), t, {
          path: showName(name),
          resolved: "",
          unlinkAfter: true,
          freeStale: false,
        }, this.desc(s));
      }
    } catch {
      log.warn(
        `${this.desc(s)}: a queued datagram from ${showName(name)} is restored without its ` +
          `sender address: that name is in use outside the tree`,
      );
    }
    return t;
  }

  private sendAll(
    from: number,
    data: Uint8Array,
    to: Uint8Array | null,
    fds: number[],
    s: UnixSocketFile,
    stream: boolean,
    resolved = "",
  ): void {
    try {
      let off = to && to.length && to[0] !== 0
        ? sendToAs(this.auth(s), from, data, to, resolved, fds, MSG.DONTWAIT, this.desc(s))
        : unixsk.send(from, data, to, fds, MSG.DONTWAIT);
      while (stream && off < data.length) {
        off += unixsk.send(from, data.subarray(off), null, [], MSG.DONTWAIT);
      }
    } catch (err) {
      if (err instanceof RestoreError) throw err;
      throw new RestoreError(
        `${this.desc(s)}: cannot put its queued data back: ${(err as Error).message}`,
      );
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
      const errno = connectAs(this.auth(s), this.fd(s), peer.name, peer.nameDir, this.desc(s));
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
      const [a, b] = unixsk.pair(s.type);
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
      if (s.sndbuf) unixsk.setInt(n, SOL_SOCKET, SO.SNDBUFFORCE, s.sndbuf >> 1);
      if (s.rcvbuf && unixsk.getInt(n, SOL_SOCKET, SO.RCVBUF) !== s.rcvbuf) {
        unixsk.setInt(n, SOL_SOCKET, SO.RCVBUFFORCE, s.rcvbuf >> 1);
      }
      if (s.peekOff !== -1) unixsk.setInt(n, SOL_SOCKET, SO.PEEK_OFF, s.peekOff);
      fdops.fcntl(n, F_SETFL, s.flags & O.NONBLOCK);
    }
  }
}

function isExternal(s: UnixSocketFile): boolean {
  return s.peer === UnixPeer.EXT_DGRAM || s.peer === UnixPeer.EXT_SERVER ||
    s.peer === UnixPeer.EXT_UNNAMED;
}

function isGone(s: UnixSocketFile): boolean {
  return s.peer === UnixPeer.GONE && s.type !== 2;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
