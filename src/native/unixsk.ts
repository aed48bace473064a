// Typed wrappers for ffi/unixsk.zig: AF_UNIX sockets built and peeked from
// ckpt. Names are raw sun_path bytes: a path without its trailing NUL, or an
// abstract name starting with a NUL byte; an empty name means unbound.
import { native } from "./load.ts";
import { NativeError } from "./mod.ts";

export const AF_UNIX = 1;
export const SOCK = { STREAM: 1, DGRAM: 2, SEQPACKET: 5, NONBLOCK: 0o4000, CLOEXEC: 0o2000000 };
export const SOL_SOCKET = 1;
export const SO_TYPE = 3, SO_DOMAIN = 39;
export const SO = {
  TYPE: 3,
  PEERCRED: 17,
  SNDBUF: 7,
  RCVBUF: 8,
  PASSCRED: 16,
  SNDBUFFORCE: 32,
  RCVBUFFORCE: 33,
  PEEK_OFF: 42,
} as const;
export const MSG = {
  PEEK: 2,
  TRUNC: 0x20,
  DONTWAIT: 0x40,
  NOSIGNAL: 0x4000,
  CMSG_CLOEXEC: 0x40000000,
} as const;
/** struct ucred: what SCM_CREDENTIALS carries. */
export interface Creds {
  pid: number;
  uid: number;
  gid: number;
}

export const SHUT_RD = 0, SHUT_WR = 1, SHUT_RDWR = 2;

/** What unixsk.set asks of one socket: a missing field is left as it is. */
export interface SocketWant {
  fd: number;
  passcred?: boolean;
  /** getsockopt's (doubled) values; written only where they differ. */
  rcvbuf?: number;
  sndbuf?: number;
  /** -1 or missing: leave. */
  peekOff?: number;
  /** O_NONBLOCK; false: leave (a new socket has no status flag). */
  nonblock?: boolean;
}

/** ffi/unixsk.zig PAIR and Want. */
const PAIR = 0x8000_0000;
const WANT_SIZE = 24;

/** ffi/unixsk.zig Options. */
const OPTIONS_SIZE = 136;

/** What unixsk.options read, socket by socket (by index). */
export class SocketOptions {
  private readonly dv: DataView;
  constructor(private readonly out: Uint8Array) {
    this.dv = new DataView(out.buffer);
  }
  /** ckpt's copy when kept, else -1. */
  fd(i: number): number {
    return this.dv.getInt32(i * OPTIONS_SIZE, true);
  }
  errno(i: number): number {
    return this.dv.getInt32(i * OPTIONS_SIZE + 4, true);
  }
  passcred(i: number): number {
    return this.dv.getInt32(i * OPTIONS_SIZE + 8, true);
  }
  peekOff(i: number): number {
    return this.dv.getInt32(i * OPTIONS_SIZE + 12, true);
  }
  name(i: number): Uint8Array<ArrayBuffer> {
    const o = i * OPTIONS_SIZE + 20;
    return nameOf(this.out.subarray(o, o + 112), this.dv.getUint32(o - 4, true));
  }
}

function check(rc: bigint, op: string, what = ""): number {
  if (rc < 0n) throw new NativeError(op, Number(-rc), what);
  return Number(rc);
}

/** struct sockaddr_un for a raw name. */
export function sockaddr(name: Uint8Array): Uint8Array<ArrayBuffer> {
  const abstract = name.length > 0 && name[0] === 0;
  const len = 2 + name.length + (abstract || name.length === 0 ? 0 : 1);
  const b = new Uint8Array(Math.max(len, 2));
  b[0] = AF_UNIX;
  b.set(name, 2);
  return b;
}

/** Unbound: one empty name for all (names are never written to). */
const NO_NAME = new Uint8Array(0);

function nameOf(addr: Uint8Array, len: number): Uint8Array<ArrayBuffer> {
  if (len <= 2) return NO_NAME;
  const raw = addr.slice(2, len);
  if (raw[0] === 0) return raw;
  const nul = raw.indexOf(0);
  return nul < 0 ? raw : raw.slice(0, nul);
}

/** A raw name for people: "@name" for abstract ones, like ss(8). */
export function showName(name: Uint8Array): string {
  if (name.length === 0) return "nameless";
  const s = new TextDecoder().decode(name[0] === 0 ? name.subarray(1) : name);
  return name[0] === 0 ? `@${s.replaceAll("\0", "@")}` : s;
}

/** The raw name for a name as sock_diag shows it ("@x" is abstract). */
export function rawName(shown: string): Uint8Array<ArrayBuffer> {
  const b = new TextEncoder().encode(shown.startsWith("@") ? `\0${shown.slice(1)}` : shown);
  return new Uint8Array(b);
}

/** The effective ids a socket is paired, connected or made to listen with:
 * the kernel gives the other end those as SO_PEERCRED. */
export interface SockIds {
  euid: number;
  egid: number;
}

/** ck_unix_as: op 0 connect, 1 listen, 2 socketpair, as `ids`. */
function callAs(
  op: number,
  fd: number,
  addr: Uint8Array<ArrayBuffer>,
  n: number,
  ids: SockIds,
): { rc: bigint; pair: [number, number] } {
  const pair = new Int32Array(2), broke = new Int32Array(1);
  const rc = native().ck_unix_as(
    op,
    fd,
    addr,
    addr.length,
    n,
    ids.euid,
    ids.egid,
    new Uint8Array(pair.buffer),
    new Uint8Array(broke.buffer),
  );
  if (broke[0]) {
    // Going on with another uid's ids would act with them: stop instead.
    console.error("ckpt: could not switch this thread's ids back after a socket call; stopping");
    Deno.exit(70);
  }
  return { rc, pair: [pair[0], pair[1]] };
}

export const unixsk = {
  socket(type: number): number {
    return check(native().ck_socket(AF_UNIX, type | SOCK.CLOEXEC, 0), "socket(AF_UNIX)");
  },
  pair(type: number, ids?: SockIds): [number, number] {
    if (ids) {
      const r = callAs(2, -1, new Uint8Array(0), type | SOCK.CLOEXEC, ids);
      check(r.rc, "socketpair", `as uid ${ids.euid}`);
      return r.pair;
    }
    const p = new Int32Array(2);
    check(
      native().ck_socketpair(AF_UNIX, type | SOCK.CLOEXEC, 0, new Uint8Array(p.buffer)),
      "socketpair",
    );
    return [p[0], p[1]];
  },
  bind(fd: number, name: Uint8Array): void {
    const a = sockaddr(name);
    check(native().ck_bind(fd, a, a.length), "bind", showName(name));
  },
  listen(fd: number, backlog: number, ids?: SockIds): void {
    const rc = ids
      ? callAs(1, fd, new Uint8Array(0), backlog, ids).rc
      : native().ck_listen(fd, backlog);
    check(rc, "listen", `fd ${fd}`);
  },
  /** Waits for the next connection on listening socket fd (off the JS
   * thread); the new socket is close-on-exec. */
  async accept(fd: number): Promise<number> {
    return check(await native().ck_accept(fd, SOCK.CLOEXEC), "accept", `fd ${fd}`);
  },
  /** accept(2) of a connection that is waiting already (on the JS thread). */
  acceptReady(fd: number): number {
    return check(native().ck_accept_ready(fd, SOCK.CLOEXEC), "accept", `fd ${fd}`);
  },
  /** SO_PEERCRED: who was at the other end when it connected (for a
   * socketpair, the process that made it). */
  peerCred(fd: number): { pid: number; uid: number; gid: number } {
    const v = new Int32Array(3);
    const l = new Uint32Array([12]);
    check(
      native().ck_getsockopt(
        fd,
        SOL_SOCKET,
        SO.PEERCRED,
        new Uint8Array(v.buffer),
        new Uint8Array(l.buffer),
      ),
      "getsockopt(SO_PEERCRED)",
      `fd ${fd}`,
    );
    return { pid: v[0], uid: v[1], gid: v[2] };
  },
  connect(fd: number, name: Uint8Array, ids?: SockIds): void {
    const a = sockaddr(name);
    const rc = ids ? callAs(0, fd, a, 0, ids).rc : native().ck_connect(fd, a, a.length);
    check(rc, "connect", `to ${showName(name)}`);
  },
  /** connect(2) that returns the errno instead of throwing (0 on success). */
  tryConnect(fd: number, name: Uint8Array, ids?: SockIds): number {
    const a = sockaddr(name);
    const rc = ids ? callAs(0, fd, a, 0, ids).rc : native().ck_connect(fd, a, a.length);
    return rc < 0n ? Number(-rc) : 0;
  },
  shutdown(fd: number, how: number): void {
    check(native().ck_shutdown(fd, how), "shutdown", `fd ${fd}`);
  },
  name(fd: number, peer = false): Uint8Array<ArrayBuffer> {
    const a = new Uint8Array(112);
    const l = new Uint32Array([a.length]);
    check(
      native().ck_sockname(fd, peer ? 1 : 0, a, new Uint8Array(l.buffer)),
      peer ? "getpeername" : "getsockname",
      `fd ${fd}`,
    );
    return nameOf(a, l[0]);
  },
  /** fd of the process behind pidfd (or ckpt's own fd, pidfd -1): ckpt's
   * fd for it (a copy, to close, unless it was ckpt's own), its name and
   * the options a dump records, in one call. */
  describe(pidfd: number, fd: number, what: string) {
    const out = new Uint32Array(5 + 28);
    const n = check(
      native().ck_unix_describe(pidfd, fd, new Uint8Array(out.buffer)),
      "reading socket",
      what,
    );
    const i32 = new Int32Array(out.buffer);
    return {
      fd: n,
      name: nameOf(new Uint8Array(out.buffer, 20, 112), out[0]),
      passcred: i32[1],
      rcvbuf: i32[2],
      sndbuf: i32[3],
      peekOff: i32[4],
    };
  },
  /** The name (where `named[i]`), SO_PASSCRED and SO_PEEK_OFF of fds of
   * the process behind pidfd, in one call; `keep[i]`: ckpt's copy of
   * fds[i] is left open for the caller, else its fd is -1. A socket that
   * could not be read has its errno. */
  options(pidfd: number, fds: number[], keep: boolean[], named: boolean[]): SocketOptions {
    const want = new Int32Array(fds);
    const flags = new Uint8Array(fds.map((_, i) => (keep[i] ? 1 : 0) | (named[i] ? 2 : 0)));
    const out = new Uint8Array(fds.length * OPTIONS_SIZE);
    check(
      native().ck_unix_options(pidfd, new Uint8Array(want.buffer), flags, BigInt(fds.length), out),
      "reading sockets",
    );
    return new SocketOptions(out);
  },
  /** Many sockets in one call: `pair[i]` makes a socketpair of types[i]
   * (both ends returned), else one socket (second -1). All O_CLOEXEC. */
  make(types: number[], pair: boolean[]): [number, number][] {
    const kinds = new Uint32Array(types.map((t, i) => (pair[i] ? PAIR : 0) | t));
    const out = new Int32Array(types.length * 2);
    check(
      native().ck_unix_make(
        new Uint8Array(kinds.buffer),
        BigInt(types.length),
        new Uint8Array(out.buffer),
      ),
      "socket(AF_UNIX)",
      `(${types.length} sockets)`,
    );
    return types.map((_, i) => [out[2 * i], out[2 * i + 1]]);
  },
  /** Sets what each want asks, in one call; returns -1, or the index of the
   * want that failed and its errno. */
  set(wants: SocketWant[]): { failed: number; errno: number } {
    const buf = new Int32Array(wants.length * (WANT_SIZE / 4));
    wants.forEach((w, i) => {
      const o = i * (WANT_SIZE / 4);
      buf[o] = w.fd;
      buf[o + 1] = w.passcred ? 1 : 0;
      buf[o + 2] = w.rcvbuf ?? 0;
      buf[o + 3] = w.sndbuf ?? 0;
      buf[o + 4] = w.peekOff ?? -1;
      buf[o + 5] = w.nonblock ? 1 : 0;
    });
    const err = new Int32Array(1);
    const done = check(
      native().ck_unix_set(
        new Uint8Array(buf.buffer),
        BigInt(wants.length),
        new Uint8Array(err.buffer),
      ),
      "setsockopt",
    );
    return done < wants.length ? { failed: done, errno: err[0] } : { failed: -1, errno: 0 };
  },
  getInt(fd: number, level: number, opt: number): number {
    const v = new Int32Array(1);
    const l = new Uint32Array([4]);
    check(
      native().ck_getsockopt(fd, level, opt, new Uint8Array(v.buffer), new Uint8Array(l.buffer)),
      "getsockopt",
      `option ${opt}`,
    );
    return v[0];
  },
  setInt(fd: number, level: number, opt: number, value: number): void {
    const v = new Int32Array([value]);
    check(
      native().ck_setsockopt(fd, level, opt, new Uint8Array(v.buffer), 4),
      "setsockopt",
      `option ${opt}`,
    );
  },
  /** One sendmsg, optionally to `to`, with descriptors and with the
   * credentials the message is to carry (SCM_CREDENTIALS: the pid must
   * exist); returns bytes sent. */
  send(
    fd: number,
    data: Uint8Array,
    to: Uint8Array | null,
    fds: number[],
    flags = 0,
    creds?: Creds,
  ): number {
    const a = to ? sockaddr(to) : new Uint8Array(0);
    const f = new Int32Array(fds);
    const c = creds ? new Int32Array([creds.pid, creds.uid, creds.gid]) : null;
    return check(
      native().ck_unix_send(
        fd,
        new Uint8Array(data),
        BigInt(data.length),
        a,
        to ? a.length : 0,
        new Uint8Array(f.buffer),
        fds.length,
        flags | MSG.NOSIGNAL,
        c ? new Uint8Array(c.buffer) : null,
      ),
      "sendmsg",
      `fd ${fd}`,
    );
  },
  /** One recvmsg into buf; null on EAGAIN (nothing more queued). */
  recv(fd: number, buf: Uint8Array<ArrayBuffer>, flags: number): {
    len: number;
    from: Uint8Array<ArrayBuffer>;
    fds: number[];
    flags: number;
    /** SCM_CREDENTIALS, when the socket has SO_PASSCRED. */
    creds?: Creds;
  } | null {
    const addr = new Uint8Array(112);
    const alen = new Uint32Array([addr.length]);
    const fds = new Int32Array(253);
    const nfds = new Uint32Array(1);
    const oflags = new Int32Array(1);
    const cr = new Int32Array(4);
    const rc = native().ck_unix_recv(
      fd,
      buf,
      BigInt(buf.length),
      addr,
      new Uint8Array(alen.buffer),
      new Uint8Array(fds.buffer),
      new Uint8Array(nfds.buffer),
      flags,
      new Uint8Array(oflags.buffer),
      new Uint8Array(cr.buffer),
    );
    if (rc === -11n) return null;
    const len = check(rc, "recvmsg", `fd ${fd}`);
    return {
      len,
      from: nameOf(addr, alen[0]),
      fds: [...fds.subarray(0, nfds[0])],
      flags: oflags[0],
      creds: cr[0] ? { pid: cr[1], uid: cr[2] >>> 0, gid: cr[3] >>> 0 } : undefined,
    };
  },
};
