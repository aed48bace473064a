// Dumping UNIX sockets: each socket's type, state, name, options, queued
// messages (with sender addresses and descriptors in flight) and where its
// peer is. Whether a peer outside the tree may be left behind is decided in
// finish(), once every socket of the image is known, with the rules of
// policy.ts; a refusal names the socket, its peer and the option to pass.
import { create } from "@bufbuild/protobuf";
import { newMessage } from "../images/codec.ts";
import {
  UnixCredsSchema,
  type UnixMessage,
  UnixMessageSchema,
  UnixPeer,
  type UnixSocketFile,
  UnixSocketFileSchema,
} from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import {
  type Creds,
  MSG,
  rawName,
  showName,
  SO,
  type SocketOptions,
  SOL_SOCKET,
  unixsk,
} from "../native/unixsk.ts";
import { readUnixSocket, readUnixSockets, type UnixSocket } from "./diag.ts";
import { comm, findHolders } from "./inventory.ts";
import { FdMap } from "../native/fdtable.ts";
import { permitted, refusal, requirementFor } from "./policy.ts";
import { resolvedDir } from "./paths.ts";
import { treePath } from "../mount/view.ts";
import { credsOf, ownerProblem } from "../files/owner.ts";

const EADDRINUSE = 98;

export interface UnixDumpOptions {
  /** Values of --ext-unix-sk: "" for the bare option, else ID[,ID…]. */
  extUnixSk: string[];
  /** Values of --external, e.g. "unix[1234]". */
  external: string[];
}

const TYPES: Record<string, number> = { STREAM: 1, DGRAM: 2, SEQPACKET: 5 };
const STATES: Record<string, number> = {
  ESTABLISHED: 1,
  CONNECTING: 2,
  UNCONNECTED: 7,
  LISTEN: 10,
};
/** sk_get_meminfo's indices (linux/sock_diag.h). */
const SK_MEMINFO_RCVBUF = 1, SK_MEMINFO_SNDBUF = 3;

/** Whether describe() reads the socket's queue (peekQueue): a STREAM
 * socket with nothing queued and a listener have none to read. */
function needsQueue(diag: UnixSocket): boolean {
  if (diag.state === "LISTEN") return false;
  return diag.type !== "STREAM" || (diag.rqueue ?? 0) > 0;
}

/** One datagram can be this big at most (wmem limits are far below). */
const DGRAM_BUF = 1 << 20;

interface Found {
  sock: UnixSocketFile;
  diag: UnixSocket;
  pid: number;
  fd: number;
}

export class UnixDumper {
  private readonly found = new Map<number, Found>();
  /** Descriptors received by peeking queues; kept open until finish() so
   * kcmp can still compare them with the tasks' own descriptors. */
  private readonly held: number[] = [];
  private readonly pidfds = new Map<number, number>();
  /** What prefetch() read, by pid and fd, until describe() takes it. */
  private readonly prefetched = new FdMap<{ batch: SocketOptions; i: number }>();
  private all: Map<number, UnixSocket> | undefined;
  /** Connection inode → the listener it waits in (built from `all`). */
  private listeners: Map<number, UnixSocket> | undefined;

  constructor(
    private readonly opts: UnixDumpOptions,
    /** Describes a descriptor ckpt holds (received in flight); its file id. */
    private readonly ownFile: (fd: number) => number,
  ) {}

  private table(atLeast = 0): Map<number, UnixSocket> {
    this.all ??= readUnixSockets(undefined, atLeast);
    return this.all;
  }

  private diag(ino: number): UnixSocket | undefined {
    let d = this.table().get(ino);
    if (!d) {
      // Created after the table was read (only possible for sockets in flight
      // whose sender is still running outside), or not a UNIX socket at all:
      // asked for alone, so other sockets do not cost a whole table each.
      d = readUnixSocket(ino) ?? undefined;
      if (d) {
        this.table().set(ino, d);
        this.listeners = undefined;
      }
    }
    return d;
  }

  /** Whether socket `ino` is a UNIX socket of this network namespace. */
  isUnix(ino: number): boolean {
    return this.diag(ino) !== undefined;
  }

  /** The socket behind fd n of pid (its file id is already given: its own
   * queue may hold it); pid may be ckpt itself for a descriptor in flight. */
  describe(pid: number, n: number, ino: number, flags: number, at: { readonly where: string }) {
    const diag = this.diag(ino);
    if (!diag) throw new DumpError(`${at.where} is not a UNIX socket of this network namespace`);
    const type = TYPES[diag.type];
    if (!type) throw new DumpError(`${at.where}: UNIX socket type ${diag.type} cannot be dumped`);
    if (diag.state === "CONNECTING") {
      throw new DumpError(`${at.where}: UNIX socket ${ino} is in the middle of connect(2)`);
    }
    const d = this.read(pid, n, diag, at);
    const fd = d.fd;
    try {
      const name = d.name;
      const sock = newMessage(UnixSocketFileSchema, {
        ino: BigInt(ino),
        type,
        state: STATES[diag.state] ?? 7,
        flags: flags & O.NONBLOCK,
        name,
        shutdown: diag.shutdown ?? 0,
        passcred: d.passcred !== 0,
        rcvbuf: d.rcvbuf,
        sndbuf: d.sndbuf,
        peekOff: d.peekOff,
        pid,
        fd: n,
      });
      this.describeName(sock, diag, pid, fd);
      if (diag.state === "LISTEN") {
        sock.backlog = diag.wqueue ?? 0;
        sock.pending = (diag.pending ?? []).map(BigInt);
      } else {
        const listener = this.listenerOf(ino);
        if (listener && (diag.wqueue ?? 0) > 0) {
          // That data sits in the connection accept() has not returned yet,
          // which no descriptor reaches: it cannot be read without accepting.
          throw new DumpError(
            `${at.where}: UNIX socket ${ino} wrote ${diag.wqueue} bytes into a connection that ` +
              `listener ${listener.inode} (${listener.name ?? "nameless"}) has not accepted yet; ` +
              `such data cannot be dumped yet`,
          );
        }
        if (listener) sock.listenerIno = BigInt(listener.inode);
        else if (diag.peer !== null) sock.peerIno = BigInt(diag.peer);
        if (diag.peer === 0 && !listener) sock.peer = UnixPeer.GONE;
        sock.queue = this.peekQueue(fd, diag, at);
      }
      this.found.set(ino, { sock, diag, pid, fd: n });
      return sock;
    } finally {
      // A copy of a task's socket (which may have the same number): closed;
      // ckpt's own descriptor in flight: kept.
      if (fd >= 0 && pid !== Deno.pid) fdops.close(fd);
    }
  }

  /** Reads the sockets among a task's fds (`ino` from their links) at
   * once: what describe() then needs of each is at hand. `isUnix` hears of
   * each UNIX socket found, with its type (SOCK_STREAM…). */
  prefetch(
    pid: number,
    socks: { fd: number; ino: number }[],
    isUnix: (ino: number, type: number) => void,
  ): void {
    this.table(socks.length);
    const fds: number[] = [], keep: boolean[] = [], named: boolean[] = [];
    for (const s of socks) {
      const diag = this.diag(s.ino);
      if (!diag) continue;
      isUnix(s.ino, TYPES[diag.type] ?? Number(diag.type.slice(4)));
      fds.push(s.fd);
      keep.push(needsQueue(diag));
      // sock_diag shows the very address getsockname gives, when there is one.
      named.push(diag.name !== null);
    }
    if (!fds.length) return;
    const batch = unixsk.options(this.pidfd(pid), fds, keep, named);
    fds.forEach((fd, i) => this.prefetched.set(pid, fd, { batch, i }));
  }

  /** fd n of pid: ckpt's fd for it (a copy to close, or -1 when its queue
   * is not read; ckpt's own for a descriptor in flight), name and options. */
  private read(pid: number, n: number, diag: UnixSocket, at: { readonly where: string }) {
    const known = this.prefetched.get(pid, n);
    const mem = diag.meminfo;
    if (known && mem && mem.length > SK_MEMINFO_SNDBUF) {
      this.prefetched.delete(pid, n);
      const { batch, i } = known;
      const errno = batch.errno(i);
      if (errno) throw new NativeError("reading socket", errno, at.where);
      // sock_diag's SK_MEMINFO_RCVBUF/SNDBUF are sk_rcvbuf/sk_sndbuf, which
      // SO_RCVBUF/SO_SNDBUF read.
      return {
        fd: batch.fd(i),
        name: batch.name(i),
        passcred: batch.passcred(i),
        peekOff: batch.peekOff(i),
        rcvbuf: mem[SK_MEMINFO_RCVBUF],
        sndbuf: mem[SK_MEMINFO_SNDBUF],
      };
    }
    if (known && known.batch.fd(known.i) >= 0) fdops.close(known.batch.fd(known.i));
    this.prefetched.delete(pid, n);
    // A copy of the task's socket, its name and options in one native call.
    return unixsk.describe(pid === Deno.pid ? -1 : this.pidfd(pid), n, at.where);
  }

  private pidfd(pid: number): number {
    let p = this.pidfds.get(pid);
    if (p === undefined) {
      p = fdops.pidfdOpen(pid);
      this.pidfds.set(pid, p);
    }
    return p;
  }

  private listenerOf(ino: number): UnixSocket | undefined {
    if (!this.listeners) {
      // Once per table, not once per socket.
      this.listeners = new Map();
      for (const s of this.table().values()) {
        if (s.state === "LISTEN") { for (const c of s.pending ?? []) this.listeners.set(c, s); }
      }
    }
    return this.listeners.get(ino);
  }

  /** Path names: the socket file's mode and owner, whether the path still
   * leads to this socket, and whether the name is really a listener's (an
   * accepted connection shares its listener's name and file). */
  private describeName(sock: UnixSocketFile, diag: UnixSocket, pid: number, fd: number) {
    if (sock.name.length === 0) return;
    if (diag.state !== "LISTEN" && diag.type !== "DGRAM") {
      // Abstract names are per type: a listener of another type is no owner.
      sock.nameBorrowed = [...this.table().values()].some((s) =>
        s.state === "LISTEN" && s.name === diag.name && s.type === diag.type &&
        (!s.vfs || !diag.vfs || (s.vfs.ino === diag.vfs.ino && s.vfs.dev === diag.vfs.dev))
      );
    }
    if (sock.name[0] === 0) {
      if (!sock.nameBorrowed && diag.state === "ESTABLISHED" && diag.type !== "DGRAM") {
        sock.nameBorrowed = !abstractNameHeld(sock.name, sock.type);
      }
      return;
    }
    const path = showName(sock.name);
    const at = path.startsWith("/") ? treePath(path) : `/proc/${pid}/cwd/${path}`;
    try {
      const st = Deno.lstatSync(at);
      if (!st.isSocket || (diag.vfs && st.ino !== diag.vfs.ino)) throw new Error("replaced");
      sock.fileMode = (st.mode ?? 0) & 0o7777;
      if (path.startsWith("/")) sock.nameDir = resolvedDir(path);
      sock.fileUid = st.uid ?? 0;
      sock.fileGid = st.gid ?? 0;
    } catch {
      sock.nameUnlinked = true;
    }
    if (sock.nameUnlinked && !sock.nameBorrowed) {
      // The copy is closed already when no queue was to be read: one more
      // is taken for this rare case.
      const copy = fd >= 0 || pid === Deno.pid
        ? fd
        : fdops.pidfdGetfd(this.pidfd(pid), sock.fd, `fd ${sock.fd} of pid ${pid}`);
      let moved: string | undefined;
      try {
        moved = movedFile(copy);
      } finally {
        if (copy !== fd && copy >= 0) fdops.close(copy);
      }
      if (moved) {
        throw new DumpError(
          `socket ${diag.inode} of pid ${pid} fd ${sock.fd} is bound to ${path}, whose file was ` +
            `moved to ${moved}: restore cannot give the socket its name and that file both; ` +
            `move the file back to ${path} or remove it, and dump again`,
        );
      }
    }
    if (!path.startsWith("/")) {
      throw new DumpError(
        `socket ${diag.inode} of pid ${pid} is bound to the relative name ${path}; ` +
          `only absolute socket names can be restored`,
      );
    }
    if (!sock.nameUnlinked && !sock.nameBorrowed && pid !== Deno.pid) {
      // Restore binds it as the task and gives the file its owner as the
      // task: what the task could not do is said now.
      const parent = path.slice(0, path.lastIndexOf("/")) || "/";
      let dir: { gid: number; setgid: boolean } | undefined;
      try {
        const d = Deno.statSync(treePath(parent));
        dir = { gid: d.gid ?? 0, setgid: ((d.mode ?? 0) & 0o2000) !== 0 };
      } catch { /* gone: restore says so */ }
      const c = credsOf(pid);
      const why = ownerProblem(c, sock.fileUid, sock.fileGid, sock.fileMode, dir);
      if (why) {
        throw new DumpError(
          `socket ${diag.inode} of pid ${pid} is bound to ${path}, whose file ${why}: ` +
            `pid ${pid} (uid ${c.fsuid}) could not bind it so itself, and restore binds it with ` +
            `the task's own authority`,
        );
      }
    }
  }

  /** The socket's own receive queue, read with MSG_PEEK from offset 0 (set
   * with SO_PEEK_OFF, and put back after) so the task loses nothing. */
  private peekQueue(fd: number, diag: UnixSocket, at: { readonly where: string }): UnixMessage[] {
    const stream = diag.type === "STREAM";
    // A stream peek must not go past the queued bytes: asking again at the
    // end would consume a pending socket error (ECONNRESET) of the task.
    const total = stream ? diag.rqueue ?? 0 : Infinity;
    if (stream && total === 0) return [];
    if (fd < 0) throw new Error(`${at.where}: the socket's queue was not expected to be read`);
    const buf = new Uint8Array(stream ? total + 65536 : DGRAM_BUF);
    const saved = unixsk.getInt(fd, SOL_SOCKET, SO.PEEK_OFF);
    // With SO_PASSCRED each peek also gives the credentials the message
    // carries (and a stream peek stops where they change): the task's own
    // setting comes back after.
    const passcred = unixsk.getInt(fd, SOL_SOCKET, SO.PASSCRED);
    const out: UnixMessage[] = [];
    unixsk.setInt(fd, SOL_SOCKET, SO.PEEK_OFF, 0);
    if (!passcred) unixsk.setInt(fd, SOL_SOCKET, SO.PASSCRED, 1);
    try {
      let got = 0;
      let part: UnixMessage | null = null;
      for (let i = 0; got < total && i < 1_000_000; i++) {
        let r;
        try {
          r = unixsk.recv(fd, buf, MSG.PEEK | MSG.DONTWAIT | MSG.CMSG_CLOEXEC);
        } catch (err) {
          const e = err instanceof NativeError ? err.message : String(err);
          throw new DumpError(
            `${at.where}: cannot read the queue of UNIX socket ${diag.inode}: ${e}`,
          );
        }
        if (r === null) break;
        if (r.len === 0 && diag.type !== "DGRAM") break; // end of a shut-down queue
        got += r.len;
        const data = buf.slice(0, r.len);
        if (part) {
          // The rest of a datagram larger than the buffer: its descriptors
          // came with the first part already.
          part.data = concat(part.data, data);
          for (const f of r.fds) fdops.close(f);
        } else {
          part = create(UnixMessageSchema, { data, sender: r.from });
          this.held.push(...r.fds);
          part.fileIds = r.fds.map((f) => this.ownFile(f));
          part.creds = this.credsOf(r.creds, diag, at.where);
        }
        if (stream || !(r.flags & MSG.TRUNC)) {
          out.push(part);
          part = null;
        }
      }
      if (part) out.push(part);
    } finally {
      unixsk.setInt(fd, SOL_SOCKET, SO.PEEK_OFF, saved);
      if (!passcred) unixsk.setInt(fd, SOL_SOCKET, SO.PASSCRED, 0);
    }
    return out;
  }

  /** The credentials a queued message carries, as restore can send them
   * again (SCM_CREDENTIALS names a pid, which restore makes exist while it
   * sends); undefined when it carries none: the kernel shows pid 0 and the
   * overflow ids then. A sender whose pid this namespace cannot see (pid 0
   * with real ids) cannot be named again. */
  private credsOf(c: Creds | undefined, diag: UnixSocket, where: string) {
    if (!c) return undefined;
    const [ouid, ogid] = overflowIds();
    if (c.pid === 0 && c.uid === ouid && c.gid === ogid) return undefined;
    if (c.pid <= 0) {
      throw new DumpError(
        `${where}: UNIX socket ${diag.inode} holds a queued message from a sender outside ` +
          `ckpt's pid namespace (uid ${c.uid} gid ${c.gid}, pid not visible): its credentials ` +
          `cannot be given back exactly; let the program read it first`,
      );
    }
    return create(UnixCredsSchema, c);
  }

  /** Decides, now that every socket of the image is known, which peers are
   * outside and whether the options allow that; returns every refusal. */
  finish(tree: number[]): string[] {
    try {
      const inside = new Set(this.found.keys());
      const treePids = new Set(tree);
      const refused: string[] = [];
      for (const f of this.found.values()) {
        const s = f.sock;
        for (const c of s.pending) {
          if (inside.has(Number(c))) continue;
          const allowed = permitted(
            { kind: "stream-server", inode: Number(s.ino), dump: "", restore: "", why: "" },
            this.opts,
          );
          if (!allowed) {
            refused.push(
              `unix ${f.diag.type.toLowerCase()} listener ${s.ino} (${this.at(f)}) at ` +
                `${showName(s.name)} has a connection from socket ${c} outside the tree waiting ` +
                `in accept(); dump with --ext-unix-sk=${s.ino} to drop such connections ` +
                `(their clients see ECONNRESET)`,
            );
          }
        }
        if (s.pending.length) s.pending = s.pending.filter((c) => inside.has(Number(c)));
        if (
          s.type === 2 && s.queue.length && !s.name.length && s.peer !== UnixPeer.GONE &&
          !(inside.has(Number(s.peerIno)) &&
            this.found.get(Number(s.peerIno))?.sock.peerIno === s.ino && s.peerIno !== s.ino)
        ) {
          refused.push(
            `unix dgram socket ${s.ino} (${this.at(f)}) has ${s.queue.length} queued datagram(s) ` +
              `but no name, and its peer is no longer its socketpair end: they cannot be put ` +
              `back exactly; let the program read them first`,
          );
        }
        if (s.peer === UnixPeer.GONE) continue;
        const peerIno = Number(s.listenerIno || s.peerIno);
        if (!peerIno) continue;
        if (inside.has(peerIno)) {
          s.peer = UnixPeer.INSIDE;
          continue;
        }
        const listener = s.listenerIno ? this.table().get(peerIno) : undefined;
        const peer = listener ? { ...listener, peer: null } : this.table().get(peerIno);
        const req = requirementFor(f.diag, {
          peer,
          listenerAtName: listener !== undefined ||
            (peer !== undefined &&
              [...this.table().values()].some((x) =>
                x.state === "LISTEN" && x.type === f.diag.type && x.name === peer.name
              )),
        });
        s.peer = req.kind === "dgram-oneway"
          ? UnixPeer.EXT_DGRAM
          : req.kind === "stream-server"
          ? UnixPeer.EXT_SERVER
          : UnixPeer.EXT_UNNAMED;
        if (peer?.name) {
          s.peerName = rawName(peer.name);
          s.peerDir = resolvedDir(peer.name);
        }
        if (permitted(req, this.opts)) continue;
        const owner = findHolders(new Set([peerIno]), treePids).get(peerIno)?.[0];
        refused.push(refusal({
          pid: f.pid,
          fd: f.fd,
          comm: f.pid === Deno.pid ? "in flight" : comm(f.pid),
          socket: f.diag,
          peerInode: peerIno,
          peerName: peer?.name ?? null,
          peerOwner: owner ? `pid ${owner.pid} (${owner.comm})` : null,
        }, req));
      }
      return refused;
    } finally {
      this.release();
    }
  }

  private at(f: Found): string {
    return f.pid === Deno.pid ? "in flight" : `pid ${f.pid} fd ${f.fd}`;
  }

  /** Closes what ckpt holds: descriptors received in flight, pidfds. */
  release(): void {
    for (const { batch, i } of this.prefetched.values()) {
      if (batch.fd(i) >= 0) fdops.close(batch.fd(i));
    }
    this.prefetched.clear();
    for (const f of this.held) fdops.close(f);
    for (const p of this.pidfds.values()) fdops.close(p);
    this.held.length = 0;
    this.pidfds.clear();
  }
}

let overflow: [number, number] | undefined;

/** The ids the kernel shows for none (/proc/sys/kernel/overflow{u,g}id). */
function overflowIds(): [number, number] {
  const read = (k: string) => {
    try {
      return Number(Deno.readTextFileSync(`/proc/sys/kernel/${k}`).trim());
    } catch {
      return 65534;
    }
  };
  return overflow ??= [read("overflowuid"), read("overflowgid")];
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Whether some socket of that type is bound to abstract `name`. A
 * connected socket that shows a name nobody holds got it from a listener
 * closed since (accept(2) shares the listener's name without binding it): a
 * bind, undone at once, is the only way to tell it from a client that bound
 * the name itself. */
function abstractNameHeld(name: Uint8Array, type: number): boolean {
  const probe = unixsk.socket(type);
  try {
    unixsk.bind(probe, name);
    return false;
  } catch (err) {
    if (err instanceof NativeError && err.errno === EADDRINUSE) return true;
    throw err;
  } finally {
    fdops.close(probe);
  }
}

/** SIOCUNIXFILE: an O_PATH fd of the file a socket is bound to. */
const SIOCUNIXFILE = 0x89e0;

/** Where the file of socket `fd` (whose name leads elsewhere now) is, if it
 * still has a name: another process may connect through it, which a socket
 * bound again under its old name could not give. Undefined when it is
 * deleted, or the kernel cannot say (no SIOCUNIXFILE, or not allowed:
 * taken as deleted). */
function movedFile(fd: number): string | undefined {
  let h: number;
  try {
    h = fdops.ioctl(fd, SIOCUNIXFILE);
  } catch {
    return undefined;
  }
  try {
    if (Deno.statSync(`/proc/self/fd/${h}`).nlink === 0) return undefined;
    return Deno.readLinkSync(`/proc/self/fd/${h}`);
  } finally {
    fdops.close(h);
  }
}
