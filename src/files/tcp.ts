// TCP sockets (IPv4 and IPv6) as a kind of file. Listening and unconnected
// sockets are recreated in ckpt (options, bind, listen). Live connections
// need --tcp-established: the dump locks every connection of the tree at
// once (src/net/lock.ts), reads each one in repair mode, and puts them in
// repair mode again just before the tree is killed, so that closing them
// sends nothing; restore rebuilds them in repair mode behind the same lock
// and lets them go just before the tree runs (src/net/tcp_repair.ts). With
// --tcp-close they are restored reset instead. Connections a listener has
// not accepted yet are refused (named), or left behind with --skip-in-flight.
import { type FileEntry, FileKind, TcpMode, TcpSocketFileSchema } from "../gen/ckpt/images_pb.ts";
import { create } from "@bufbuild/protobuf";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops } from "../native/mod.ts";
import { sock, SOL } from "../native/inetsk.ts";
import { errnoText } from "../native/errno.ts";
import { log } from "../util/log.ts";
import { addrText } from "../net/addr.ts";
import { type InetDiag, InetTable, IPPROTO_TCP, TCP_STATES } from "../net/diag.ts";
import {
  checkTableName,
  type Conn,
  DumpLock,
  lockForRestore,
  newTableName,
  unlockTable,
} from "../net/lock.ts";
import {
  checkRepair,
  finishConnection,
  isRepairable,
  rebuild,
  rebuildReset,
  saveConnection,
  ST,
  tcpState,
} from "../net/tcp_repair.ts";
import { socketFds } from "../unix/inventory.ts";
import {
  applyLater,
  bindBack,
  isInet,
  newInetSocket,
  readInet,
  SOCK_STREAM,
  socketInode,
  sockKind,
  sockText,
  validateInet,
} from "./inet.ts";
import type { DumpContext, FileKindOps, LetGo, RestoreContext } from "./kind.ts";

const stateName = (s: number) => TCP_STATES[s] ?? `state ${s}`;
const SO_REUSEADDR = 2, SO_LINGER = 13, TCP_REPAIR = 19;

/** One dump's view of the tree's TCP sockets and its connection lock. */
class TcpDump {
  private diagTable: InetTable | undefined;
  private lock: DumpLock | undefined;
  /** Why locking failed: said once, the other connections point to it. */
  private lockFailed: string | undefined;
  /** Copies of every locked connection's socket, by inode, until let go. */
  private readonly copies = new Map<number, { fd: number; reuse: number }>();
  private readonly treeInodes = new Set<number>();
  /** Connections dumped with --tcp-close: reset when the tree is killed. */
  private readonly resets: number[] = [];
  readonly table: string;

  constructor(private readonly ctx: DumpContext) {
    this.table = newTableName(ctx.pids[0] ?? 0);
    ctx.atLetGo((how) => this.letGo(how));
    for (const p of ctx.pids) for (const s of socketFds(p)) this.treeInodes.add(s.inode);
  }

  get diag(): InetTable {
    this.diagTable ??= new InetTable([IPPROTO_TCP]);
    return this.diagTable;
  }

  inTree(d: InetDiag | undefined): boolean {
    return d !== undefined && d.inode !== 0 && this.treeInodes.has(d.inode);
  }

  /** Every live connection of the tree locked at once, before the first is
   * read: one nftables transaction, one watchdog. */
  lockAll(where: string): void {
    if (this.lock) return;
    if (this.lockFailed) {
      throw new DumpError(`${where}: not locked either (${this.lockFailed})`);
    }
    const t0 = performance.now();
    const conns: Conn[] = [];
    const pidfds: number[] = [];
    try {
      for (const pid of this.ctx.pids) {
        pidfds.push(fdops.pidfdOpen(pid));
        for (const { fd, inode } of socketFds(pid)) {
          const d = this.diag.byInode.get(inode);
          if (!d || this.copies.has(inode) || !isRepairable(d.state)) continue;
          const copy = this.ctx.copyFd(pid, fd, `fd ${fd} of pid ${pid}`);
          this.copies.set(inode, { fd: copy, reuse: sock.getInt(copy, SOL.SOCKET, SO_REUSEADDR) });
          const local = sock.name(copy), peer = sock.name(copy, true);
          if (local && peer) conns.push({ local, peer });
        }
      }
      log.debug(
        `${conns.length} TCP connection(s) found in ${(performance.now() - t0).toFixed(1)} ms`,
      );
      this.lock = DumpLock.start(this.table, conns, [...this.copies.values()], pidfds);
    } catch (err) {
      this.closeCopies();
      this.lockFailed = "the TCP connections could not be locked";
      throw err;
    } finally {
      for (const p of pidfds) fdops.close(p);
    }
  }

  copyOf(inode: number): number | undefined {
    return this.copies.get(inode)?.fd;
  }

  /** A connection restored reset: closed with a reset too when the tree is
   * killed, so no TIME_WAIT keeps its port from the restored listener. */
  resetAtKill(copy: number): void {
    this.resets.push(fdops.dupAbove(copy, 100));
  }

  private closeCopies(): void {
    for (const c of this.copies.values()) fdops.close(c.fd);
    this.copies.clear();
  }

  private letGo(how: LetGo): void {
    if (how === "kill") {
      const linger0 = new Uint8Array(new Int32Array([1, 0]).buffer);
      for (const c of this.resets) sock.set(c, SOL.SOCKET, SO_LINGER, linger0);
    }
    if (how !== "kill") { for (const c of this.resets.splice(0)) fdops.close(c); }
    if (!this.lock) return;
    if (how === "kill") {
      // Closing a socket in repair mode sends nothing: the peer must not
      // see the old socket go.
      for (const [ino, c] of this.copies) {
        const err = sock.setInt(c.fd, SOL.TCP, TCP_REPAIR, 1);
        if (err) {
          log.warn(`TCP socket ${ino}: repair mode before the kill failed: ${errnoText(err)}`);
        }
      }
      return;
    }
    const lock = this.lock;
    this.lock = undefined;
    try {
      if (how === "killed") lock.keep();
      else lock.unlock();
    } finally {
      this.closeCopies();
    }
    if (how === "killed") {
      log.info(
        `TCP connections stay locked (nftables table inet ${this.table}) until they are restored`,
      );
    }
  }
}

function dumper(ctx: DumpContext): TcpDump {
  return ctx.local(tcp, () => new TcpDump(ctx));
}

function connText(d: InetDiag): string {
  return `${addrText(d.local)} → ${addrText(d.peer)}`;
}

function dumpTcp(fd: Parameters<FileKindOps["dump"]>[0], ctx: DumpContext) {
  const kind = sockKind(fd, ctx)!;
  const d = dumper(ctx);
  const ino = socketInode(fd);
  const copy = ctx.copyFd(fd.pid, fd.fd, fd.where);
  try {
    const sk = readInet(copy, fd, kind, "tcp");
    const state = tcpState(copy);
    const diag = d.diag.byInode.get(ino);
    sk.shutdown = diag?.shutdown ?? 0;
    const entry = create(TcpSocketFileSchema, { sk, state, mode: TcpMode.TCP_PLAIN });
    if (state === ST.LISTEN) {
      entry.backlog = diag?.wqueue ?? 128;
      const pending = diag ? d.diag.pendingOf(diag) : [];
      if (pending.length) {
        const list = pending.map((p) => `${addrText(p.peer)} (${stateName(p.state)})`).join(", ");
        if (!ctx.net.skipInFlight) {
          throw new DumpError(
            `${fd.where}: the TCP listener ${addrText(sk.local)} has ${pending.length} ` +
              `connection(s) not accepted yet, from ${list}; they cannot be dumped: ` +
              `dump again once they are accepted, or give --skip-in-flight to leave them behind ` +
              `(their clients see a reset)`,
          );
        }
        log.warn(
          `${fd.where}: leaving behind ${pending.length} connection(s) the TCP listener ` +
            `${addrText(sk.local)} has not accepted yet (--skip-in-flight): ${list}`,
        );
      }
      return entry;
    }
    if (state === ST.CLOSE) return entry;
    if (!isRepairable(state)) {
      throw new DumpError(
        `${fd.where}: the ${sockText(sk, stateName(state))} is still connecting; ` +
          `dump again once connect() has finished`,
      );
    }
    const peerDiag = diag ? d.diag.peerOf(diag) : undefined;
    entry.peerInside = d.inTree(peerDiag);
    const where = entry.peerInside ? "inside the tree" : "outside the tree";
    if (ctx.net.tcpEstablished) {
      d.lockAll(fd.where);
      const held = d.copyOf(ino);
      if (held === undefined) {
        throw new DumpError(`${fd.where}: the ${sockText(sk)} was not locked (it appeared late)`);
      }
      try {
        const saved = saveConnection(held, `${fd.where} (${sockText(sk)})`);
        entry.state = saved.state;
        entry.repair = saved.r;
      } catch (err) {
        throw new DumpError(`${(err as Error).message}`);
      }
      entry.mode = TcpMode.TCP_REPAIRED;
      entry.lockTable = d.table;
      return entry;
    }
    if (ctx.net.tcpClose) {
      entry.mode = TcpMode.TCP_RESET;
      d.resetAtKill(copy);
      return entry;
    }
    throw new DumpError(
      `${fd.where}: TCP connection ${diag ? connText(diag) : addrText(sk.local)} ` +
        `(${stateName(state)}, peer ${where}) needs --tcp-established to be dumped live ` +
        `or --tcp-close to be restored reset`,
    );
  } finally {
    if (copy !== fd.fd) fdops.close(copy);
  }
}

/** One restore's rebuilt connections and the locks they sit behind. */
class TcpRestore {
  private readonly locked = new Set<string>();
  private readonly pending: { fd: number; f: FileEntry; where: string }[] = [];
  private finished = false;

  constructor(private readonly ctx: RestoreContext) {
    ctx.beforeRun(() => this.finish());
    ctx.atClose(() => {
      if (this.finished || this.locked.size === 0) return;
      log.warn(
        `the dumped TCP connections stay locked so the images can be restored again; ` +
          `'nft delete table inet ${[...this.locked].join("' / '")}' releases them`,
      );
    });
  }

  /** The lock of table in place before the first of its sockets is made. */
  lockFor(table: string): void {
    if (this.locked.has(table)) return;
    const conns: Conn[] = [];
    for (const e of this.ctx.entries.values()) {
      const t = e.tcp;
      if (t?.mode === TcpMode.TCP_REPAIRED && t.lockTable === table && t.sk) {
        conns.push({ local: t.sk.local, peer: t.sk.peer });
      }
    }
    lockForRestore(table, conns);
    this.locked.add(table);
  }

  add(fd: number, f: FileEntry, where: string): void {
    this.pending.push({ fd, f, where });
  }

  private finish(): void {
    for (const t of this.locked) unlockTable(t);
    this.finished = true;
    for (const { fd, f, where } of this.pending) {
      const t = f.tcp!;
      try {
        finishConnection(fd, t.sk!, t.state, t.repair!, `${where} (${sockText(t.sk!)})`);
      } catch (err) {
        throw new RestoreError((err as Error).message);
      }
    }
  }
}

function restorer(ctx: RestoreContext): TcpRestore {
  return ctx.local(TcpRestore, () => new TcpRestore(ctx));
}

function openTcp(f: FileEntry, ctx: RestoreContext, where: string): number {
  const t = f.tcp!;
  const sk = t.sk!;
  // How each connection comes back is what its dump chose (--tcp-established
  // or --tcp-close, recorded in the image): restore needs neither option.
  const what = `${where} (${sockText(sk)})`;
  if (t.mode === TcpMode.TCP_RESET) {
    try {
      return rebuildReset(
        () => {
          const n = newInetSocket(sk, where, ctx.authority);
          applyLater(n, sk, where, true);
          return n;
        },
        sk,
        what,
      );
    } catch (err) {
      throw err instanceof RestoreError ? err : new RestoreError((err as Error).message);
    }
  }
  if (t.mode === TcpMode.TCP_REPAIRED) restorer(ctx).lockFor(t.lockTable);
  const fd = newInetSocket(sk, where, ctx.authority);
  try {
    if (t.mode === TcpMode.TCP_REPAIRED) {
      applyLater(fd, sk, where, true);
      try {
        rebuild(fd, sk, t.state, t.repair!, what);
      } catch (err) {
        const e = err as { errno?: number; step?: string };
        if (e.errno === 99 && e.step === "connect in repair mode") {
          throw new RestoreError(
            `${what}: the connection ${addrText(sk.local)} → ${addrText(sk.peer)} exists ` +
              `already (is the dumped process still running? a dump with -R cannot be restored ` +
              `beside it)`,
          );
        }
        throw err;
      }
      restorer(ctx).add(fd, f, where);
      return fd;
    }
    bindBack(fd, sk, where);
    if (t.state === ST.LISTEN) {
      const err = sock.listen(fd, t.backlog);
      if (err) {
        throw new RestoreError(
          `${where}: listen() on ${addrText(sk.local)} failed: ${errnoText(err)}` +
            (err === 98 ? " (another socket listens on that port)" : ""),
        );
      }
    }
    applyLater(fd, sk, where);
    return fd;
  } catch (err) {
    fdops.close(fd);
    throw err instanceof RestoreError ? err : new RestoreError((err as Error).message);
  }
}

export const tcp: FileKindOps = {
  name: "TCP socket",
  // Made inside the tree's network namespace when it has its own.
  network: true,
  kinds: [FileKind.FILE_TCP],

  claims: (fd, ctx) => {
    const k = sockKind(fd, ctx);
    return isInet(k) && k.type === SOCK_STREAM && k.protocol === IPPROTO_TCP;
  },

  dump: (fd, ctx) => ({ kind: FileKind.FILE_TCP, tcp: dumpTcp(fd, ctx) }),

  validate(f, fail) {
    const t = f.tcp ?? fail("TCP socket details missing");
    const sk = validateInet(t.sk, fail);
    if (sk.type !== SOCK_STREAM || sk.protocol !== IPPROTO_TCP) fail("not a TCP socket");
    switch (t.mode) {
      case TcpMode.TCP_PLAIN:
        if (t.state !== ST.LISTEN && t.state !== ST.CLOSE) {
          fail(`TCP state ${t.state} without repair`);
        }
        if (t.backlog > 1 << 20) fail(`backlog ${t.backlog}`);
        break;
      case TcpMode.TCP_REPAIRED: {
        if (!sk.local.length || !sk.peer.length) fail("a connection without both addresses");
        if (!checkTableName(t.lockTable)) fail(`lock table name '${t.lockTable}'`);
        const why = checkRepair(t.state, t.repair);
        if (why) fail(why);
        break;
      }
      case TcpMode.TCP_RESET:
        if (!sk.local.length || !sk.peer.length) fail("a connection without both addresses");
        break;
      default:
        fail(`TCP mode ${t.mode}`);
    }
  },

  open: openTcp,

  inheritKey: (f) => `socket:[${f.tcp?.sk?.ino}]`,
};
