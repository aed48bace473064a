// What every inet socket kind shares: telling which kind of socket an fd
// is (its domain, type and protocol, asked of a copy), the common record
// (addresses, options, flags), and at restore a new socket with the options
// that must precede bind(), bound again to the address the dump saw — only
// that address, in ckpt's own network namespace (the task's: other
// namespaces are refused at dump).
import { create } from "@bufbuild/protobuf";
import { type InetSocket, InetSocketSchema } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { errnoText } from "../native/errno.ts";
import { sock, SOL } from "../native/inetsk.ts";
import { addrText, AF_INET, AF_INET6, isWildcard, parseSockaddr } from "../net/addr.ts";
import { applyOptions, checkOption, readOptions, type SockClass } from "../net/options.ts";
import { checkGroup } from "../net/mcast.ts";
import { protoName } from "../net/names.ts";
import type { DumpContext, DumpedFd } from "./kind.ts";
import { asTask, type Authority } from "../native/creds.ts";

export const AF_NETLINK = 16;
export const SOCK_STREAM = 1, SOCK_DGRAM = 2, SOCK_RAW = 3;
const SO_TYPE = 3, SO_PROTOCOL = 38, SO_DOMAIN = 39;
const SOCK_NONBLOCK = 0o4000;

export interface SockKind {
  domain: number;
  type: number;
  protocol: number;
}

const SOCKET_LINK = /^socket:\[(\d+)\]$/;

const cache = {};

function known(ctx: DumpContext): Map<number, SockKind | null> {
  return ctx.local(cache, () => new Map<number, SockKind | null>());
}

/** What another kind already knows of socket `ino` (sock_diag lists every
 * UNIX socket of the namespace with its type): sockKind then asks no copy,
 * which for ten thousand sockets is a pidfd_getfd, three getsockopt and a
 * close each. */
export function knownSockKind(ctx: DumpContext, ino: number, k: SockKind): void {
  known(ctx).set(ino, k);
}

/** Domain, type and protocol of a socket fd (asked once per socket of a
 * dump); undefined when fd is no socket. */
export function sockKind(fd: DumpedFd, ctx: DumpContext): SockKind | undefined {
  const ino = socketInode(fd);
  if (!ino) return undefined;
  const kinds = known(ctx);
  let k = kinds.get(ino);
  if (k === undefined) {
    let copy = -1;
    try {
      copy = ctx.copyFd(fd.pid, fd.fd, fd.where);
      k = {
        domain: sock.getInt(copy, SOL.SOCKET, SO_DOMAIN),
        type: sock.getInt(copy, SOL.SOCKET, SO_TYPE),
        protocol: sock.getInt(copy, SOL.SOCKET, SO_PROTOCOL),
      };
    } catch {
      k = null; // not a socket we can ask: another kind will say what it is
    } finally {
      if (copy >= 0 && copy !== fd.fd) fdops.close(copy);
    }
    kinds.set(ino, k);
  }
  return k ?? undefined;
}

export function isInet(k: SockKind | undefined): k is SockKind {
  return k !== undefined && (k.domain === AF_INET || k.domain === AF_INET6);
}

/** The inode of a socket fd (0: no socket), from its stat when it has one
 * (a sockfs file has the very inode its link "socket:[INO]" names). */
export function socketInode(fd: DumpedFd): number {
  if (!fd.link.startsWith("socket:[")) return 0;
  if (fd.st.isSocket && fd.st.ino) return fd.st.ino;
  return Number(SOCKET_LINK.exec(fd.link)?.[1] ?? 0);
}

/** "TCP socket 127.0.0.1:8080 → 127.0.0.1:40000 (fd 5 of pid 123)". */
export function sockText(sk: InetSocket, state?: string): string {
  const what = protoName(sk.family, sk.type, sk.protocol);
  const peer = sk.peer.length ? ` → ${addrText(sk.peer)}` : "";
  return `${what} socket ${addrText(sk.local)}${peer}${state ? ` (${state})` : ""} ` +
    `(fd ${sk.fd} of pid ${sk.pid})`;
}

/** The record every inet socket has, from a copy of it. */
export function readInet(
  copy: number,
  fd: DumpedFd,
  kind: SockKind,
  cls: SockClass,
): InetSocket {
  const local = sock.name(copy) ?? new Uint8Array();
  const peer = sock.name(copy, true) ?? new Uint8Array();
  return create(InetSocketSchema, {
    ino: BigInt(socketInode(fd)),
    family: kind.domain,
    type: kind.type,
    protocol: kind.protocol,
    flags: fd.flags & O.NONBLOCK,
    local: bound(local) ? local : new Uint8Array(),
    peer,
    opts: readOptions(copy, cls, kind.domain),
    pid: fd.pid,
    fd: fd.fd,
  });
}

/** Whether a getsockname result is a binding (port or address set). */
function bound(raw: Uint8Array): boolean {
  const a = parseSockaddr(raw);
  return a !== null && (a.port !== 0 || !isWildcard(a));
}

/** A well-formed sockaddr of the socket's family (or empty). */
function okAddr(raw: Uint8Array, family: number): boolean {
  if (raw.length === 0) return true;
  const a = parseSockaddr(raw);
  return a !== null && a.family === family && raw.length === (family === AF_INET ? 16 : 28);
}

export function validateInet(sk: InetSocket | undefined, fail: (why: string) => never): InetSocket {
  if (!sk) fail("socket details missing");
  if (sk.family !== AF_INET && sk.family !== AF_INET6) fail(`socket family ${sk.family}`);
  if (![SOCK_STREAM, SOCK_DGRAM, SOCK_RAW].includes(sk.type)) fail(`socket type ${sk.type}`);
  if (sk.protocol > 255) fail(`socket protocol ${sk.protocol}`);
  if (!okAddr(sk.local, sk.family) || !okAddr(sk.peer, sk.family)) fail("socket address");
  for (const o of sk.opts) {
    const why = checkOption(o);
    if (why) fail(why);
  }
  for (const g of sk.mcast) {
    const why = checkGroup(g);
    if (why) fail(why);
  }
  return sk;
}

/** A new socket like sk, with the options that must precede bind() set.
 * TCP and UDP sockets are made as the task (`authority`), so they are its
 * own (their owner in /proc/net, what SO_REUSEPORT groups compare); raw and
 * ping sockets, which need privileges to make, by ckpt. */
export function newInetSocket(sk: InetSocket, where: string, authority?: Authority): number {
  const type = sk.type | (sk.flags & O.NONBLOCK ? SOCK_NONBLOCK : 0);
  const make = () => sock.socket(sk.family, type, sk.protocol);
  const privileged = sk.type === SOCK_RAW || sk.protocol === 1 || sk.protocol === 58;
  let fd: number;
  try {
    fd = authority && !privileged ? asTask(authority, make) : make();
  } catch (err) {
    throw new RestoreError(
      `${where}: cannot create the ${sockText(sk)}: ${(err as Error).message}`,
    );
  }
  try {
    applyOptions(fd, sk.opts, { prebind: true }, where);
  } catch (err) {
    fdops.close(fd);
    throw new RestoreError((err as Error).message);
  }
  return fd;
}

/** bind() to the dumped address, with an error that says what to do. */
export function bindBack(fd: number, sk: InetSocket, where: string): void {
  if (sk.local.length === 0) return;
  const err = sock.bind(fd, sk.local);
  if (err === 0) return;
  const hint = err === 98
    ? ": the port is taken (is the dumped process still running, or did another one take it?)"
    : err === 99
    ? ": that address is not on this machine any more"
    : "";
  throw new RestoreError(
    `${where}: cannot bind the ${sockText(sk)} to ${addrText(sk.local)} again: ${
      errnoText(err)
    }${hint}`,
  );
}

/** The options set after bind/connect; throws a RestoreError. */
export function applyLater(fd: number, sk: InetSocket, where: string, repaired = false): void {
  try {
    applyOptions(fd, sk.opts, { prebind: false, repaired }, where);
  } catch (err) {
    throw new RestoreError((err as Error).message);
  }
}
