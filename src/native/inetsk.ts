// Typed wrappers for ffi/inetsk.zig and the generic socket calls inet and
// netlink sockets use: addresses are raw sockaddr bytes (src/net/addr.ts
// reads and writes them), options raw getsockopt values.
import { native } from "./load.ts";
import { ERRNO, NativeError } from "./mod.ts";

function check(rc: bigint, op: string, what = ""): number {
  if (rc < 0n) throw new NativeError(op, Number(-rc), what);
  return Number(rc);
}

const FIRST_DIAG = 64 * 1024;
const MAX_DIAG = 256 * 1024 * 1024;

/** One NETLINK_SOCK_DIAG request (body after the nlmsghdr); the reply's
 * netlink messages. `what` names it in errors. */
export function sockDiag(req: Uint8Array, dump: boolean, what: string): Uint8Array<ArrayBuffer> {
  const body = new Uint8Array(req);
  for (let size = FIRST_DIAG;; size *= 2) {
    const buf = new Uint8Array(size);
    const rc = native().ck_sock_diag(body, body.length, dump ? 1 : 0, buf, BigInt(size));
    if (rc >= 0n) return buf.slice(0, Number(rc));
    const errno = Number(-rc);
    if (errno !== ERRNO.ENOSPC || size >= MAX_DIAG) throw new NativeError("sock_diag", errno, what);
  }
}

export const SOL = { SOCKET: 1, IP: 0, IPV6: 41, TCP: 6, UDP: 17, UDPLITE: 136, RAW: 255 } as const;

export const sock = {
  socket(domain: number, type: number, proto: number): number {
    return check(
      native().ck_socket(domain, type | 0o2000000, proto),
      "socket",
      `(${domain}, ${type}, ${proto})`,
    );
  },
  bind(fd: number, sa: Uint8Array): number {
    const a = new Uint8Array(sa);
    const rc = native().ck_bind(fd, a, a.length);
    return rc < 0n ? Number(-rc) : 0;
  },
  connect(fd: number, sa: Uint8Array): number {
    const a = new Uint8Array(sa);
    const rc = native().ck_connect(fd, a, a.length);
    return rc < 0n ? Number(-rc) : 0;
  },
  listen(fd: number, backlog: number): number {
    const rc = native().ck_listen(fd, backlog);
    return rc < 0n ? Number(-rc) : 0;
  },
  shutdown(fd: number, how: number): number {
    const rc = native().ck_shutdown(fd, how);
    return rc < 0n ? Number(-rc) : 0;
  },
  /** getsockname / getpeername, raw; null when not connected (ENOTCONN). */
  name(fd: number, peer = false): Uint8Array<ArrayBuffer> | null {
    const a = new Uint8Array(128);
    const l = new Uint32Array([a.length]);
    const rc = native().ck_sockname(fd, peer ? 1 : 0, a, new Uint8Array(l.buffer));
    if (rc === -BigInt(ERRNO.ENOTCONN)) return null;
    check(rc, peer ? "getpeername" : "getsockname", `fd ${fd}`);
    return a.slice(0, Math.min(l[0], a.length));
  },
  /** getsockopt's raw value, or the errno (a number) when it fails; `input`
   * is what the option reads first (MCAST_MSFILTER's group). */
  get(
    fd: number,
    level: number,
    opt: number,
    len = 4,
    input?: Uint8Array,
  ): Uint8Array<ArrayBuffer> | number {
    const v = new Uint8Array(len);
    if (input) v.set(input.subarray(0, len));
    const l = new Uint32Array([len]);
    const rc = native().ck_getsockopt(fd, level, opt, v, new Uint8Array(l.buffer));
    if (rc < 0n) return Number(-rc);
    return v.slice(0, Math.min(l[0], len));
  },
  getInt(fd: number, level: number, opt: number): number {
    const v = sock.get(fd, level, opt);
    if (typeof v === "number") {
      throw new NativeError("getsockopt", v, `(${level}, ${opt}) of fd ${fd}`);
    }
    return v.length >= 4 ? new DataView(v.buffer).getInt32(0, true) : v[0] ?? 0;
  },
  /** getsockopt of many options at once: each value, or its errno. */
  getMany(
    fd: number,
    specs: { level: number; name: number; len: number }[],
  ): (Uint8Array<ArrayBuffer> | number)[] {
    const sp = new Int32Array(specs.length * 3);
    let total = 0;
    specs.forEach((s, i) => {
      sp.set([s.level, s.name, s.len], i * 3);
      total += s.len;
    });
    const out = new Uint8Array(total);
    const lens = new Int32Array(specs.length);
    native().ck_getsockopts(
      fd,
      new Uint8Array(sp.buffer),
      specs.length,
      out,
      new Uint8Array(lens.buffer),
    );
    let off = 0;
    return specs.map((s, i) => {
      const at = off;
      off += s.len;
      return lens[i] < 0 ? -lens[i] : out.slice(at, at + Math.min(lens[i], s.len));
    });
  },
  /** setsockopt; 0 or the errno. */
  set(fd: number, level: number, opt: number, value: Uint8Array): number {
    const v = new Uint8Array(value);
    const rc = native().ck_setsockopt(fd, level, opt, v, v.length);
    return rc < 0n ? Number(-rc) : 0;
  },
  setInt(fd: number, level: number, opt: number, value: number): number {
    return sock.set(fd, level, opt, new Uint8Array(new Int32Array([value]).buffer));
  },
  ioctlInt(fd: number, req: number): number {
    const v = new Int32Array(1);
    const at = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(v)));
    check(native().ck_ioctl(fd, BigInt(req), at), "ioctl", `fd ${fd}`);
    return v[0];
  },
  /** One recvmsg with its control messages, raw; null on EAGAIN. */
  recv(fd: number, buf: Uint8Array<ArrayBuffer>, flags: number): {
    len: number;
    from: Uint8Array<ArrayBuffer>;
    ctl: Uint8Array<ArrayBuffer>;
    flags: number;
  } | null {
    const addr = new Uint8Array(128);
    const alen = new Uint32Array([addr.length]);
    const ctl = new Uint8Array(1024);
    const clen = new Uint32Array([ctl.length]);
    const oflags = new Int32Array(1);
    const rc = native().ck_recvmsg_raw(
      fd,
      buf,
      BigInt(buf.length),
      addr,
      new Uint8Array(alen.buffer),
      ctl,
      new Uint8Array(clen.buffer),
      flags,
      new Uint8Array(oflags.buffer),
    );
    if (rc === -BigInt(ERRNO.EAGAIN)) return null;
    const len = check(rc, "recvmsg", `fd ${fd}`);
    return {
      len,
      from: addr.slice(0, Math.min(alen[0], addr.length)),
      ctl: ctl.slice(0, Math.min(clen[0], ctl.length)),
      flags: oflags[0],
    };
  },
  /** Sends every byte without blocking (EAGAIN is an error here). */
  sendAll(fd: number, data: Uint8Array, what: string): void {
    if (data.length === 0) return;
    const d = new Uint8Array(data);
    check(native().ck_send_all(fd, d, BigInt(d.length)), "send", what);
  },
  /** A whole IP packet from a raw socket with SO_MARK `mark`, to dst. */
  rawSend(family: number, pkt: Uint8Array, dst: Uint8Array, mark: number, what: string): void {
    const p = new Uint8Array(pkt);
    const a = new Uint8Array(dst);
    check(
      native().ck_raw_send(family, p, BigInt(p.length), a, a.length, mark >>> 0),
      "sendto(raw)",
      what,
    );
  },
};

/** The fields of ck_tcp_save/TcpState, in order (all u32). */
export const TCP_STATE_FIELDS = [
  "state",
  "options",
  "sndWscale",
  "rcvWscale",
  "inqLen",
  "outqLen",
  "unsqLen",
  "inqSeq",
  "outqSeq",
  "mssClamp",
  "timestamp",
  "hasWindow",
  "sndWl1",
  "sndWnd",
  "maxWindow",
  "rcvWnd",
  "rcvWup",
  "rqGot",
  "sqGot",
  "step",
] as const;
export type TcpState = Record<typeof TCP_STATE_FIELDS[number], number>;

/** A connection's state read in repair mode, with both queues' bytes. */
export interface TcpSaved extends TcpState {
  rq: Uint8Array<ArrayBuffer>;
  sq: Uint8Array<ArrayBuffer>;
}

const SAVE_STEPS = [
  "",
  "TCP_INFO",
  "queue sizes (SIOCINQ/SIOCOUTQ)",
  "SO_REUSEADDR",
  "TCP_REPAIR on",
  "TCP_MAXSEG",
  "TCP_TIMESTAMP",
  "TCP_REPAIR_WINDOW",
  "receive queue sequence",
  "peeking the receive queue",
  "send queue sequence",
  "peeking the send queue",
  "TCP_REPAIR off",
];

export class TcpRepairError extends NativeError {
  constructor(op: string, errno: number, readonly step: string, what: string) {
    super(`${op} (${step})`, errno, what);
  }
}

/** Room the queue peeks reuse from one connection to the next (a dump reads
 * many): grown when a queue is bigger. */
let scratch = { rq: new Uint8Array(0), sq: new Uint8Array(0) };

export const tcp = {
  /** Reads a locked connection in repair mode (ck_tcp_save). */
  save(fd: number, what: string): TcpSaved {
    let rqCap = Math.max(256 * 1024, scratch.rq.length - 1);
    let sqCap = Math.max(256 * 1024, scratch.sq.length - 65536);
    for (let i = 0; i < 8; i++) {
      const st = new Uint32Array(TCP_STATE_FIELDS.length);
      if (scratch.rq.length < rqCap + 1) scratch = { ...scratch, rq: new Uint8Array(rqCap + 1) };
      if (scratch.sq.length < sqCap + 65536) {
        scratch = { ...scratch, sq: new Uint8Array(sqCap + 65536) };
      }
      const { rq, sq } = scratch;
      const rc = native().ck_tcp_save(
        fd,
        new Uint8Array(st.buffer),
        rq,
        BigInt(rq.length),
        sq,
        BigInt(sq.length),
      );
      const out = Object.fromEntries(TCP_STATE_FIELDS.map((k, j) => [k, st[j]])) as TcpState;
      if (rc === -BigInt(ERRNO.ENOSPC)) {
        rqCap = Math.max(rqCap, out.inqLen);
        sqCap = Math.max(sqCap, out.outqLen);
        continue;
      }
      if (rc < 0n) {
        throw new TcpRepairError("TCP repair", Number(-rc), SAVE_STEPS[out.step] ?? "", what);
      }
      return { ...out, rq: rq.slice(0, out.rqGot), sq: sq.slice(0, out.sqGot) };
    }
    throw new NativeError("TCP repair", ERRNO.ENOSPC, `${what}: its queues keep growing`);
  },

  /** Rebuilds a connection in a new socket (ck_tcp_restore); left in repair mode. */
  restore(
    fd: number,
    r: {
      recvSeq: number;
      sendSeq: number;
      options: number;
      sndWscale: number;
      rcvWscale: number;
      mssClamp: number;
      timestamp: number;
      window?: {
        sndWl1: number;
        sndWnd: number;
        maxWindow: number;
        rcvWnd: number;
        rcvWup: number;
      };
    },
    local: Uint8Array,
    peer: Uint8Array,
    rq: Uint8Array,
    sentQ: Uint8Array,
    what: string,
  ): void {
    const w = r.window;
    const args = new Uint32Array([
      r.recvSeq,
      r.sendSeq,
      r.options,
      r.sndWscale,
      r.rcvWscale,
      r.mssClamp,
      r.timestamp,
      w ? 1 : 0,
      w?.sndWl1 ?? 0,
      w?.sndWnd ?? 0,
      w?.maxWindow ?? 0,
      w?.rcvWnd ?? 0,
      w?.rcvWup ?? 0,
      0,
    ].map((v) => v >>> 0));
    const l = new Uint8Array(local), p = new Uint8Array(peer), q = new Uint8Array(rq);
    const sq = new Uint8Array(sentQ);
    const rc = native().ck_tcp_restore(
      fd,
      new Uint8Array(args.buffer),
      l,
      l.length,
      p,
      p.length,
      q,
      BigInt(q.length),
      sq,
      BigInt(sq.length),
    );
    if (rc < 0n) {
      const steps = [
        "",
        "TCP_REPAIR on",
        "bind",
        "receive queue sequence",
        "send queue sequence",
        "connect in repair mode",
        "TCP_REPAIR_OPTIONS",
        "TCP_TIMESTAMP",
        "the receive queue's bytes",
        "TCP_REPAIR_WINDOW",
        "leaving the repair queue",
        "the sent bytes not acknowledged",
      ];
      throw new TcpRepairError("TCP repair", Number(-rc), steps[args[13]] ?? "", what);
    }
  },

  /** shutdown(SHUT_WR) in repair mode; queue 2 marks the FIN as already sent. */
  repairFin(fd: number, queue: number, what: string): void {
    check(native().ck_tcp_repair_fin(fd, queue), "shutdown in repair mode", what);
  },
};

export interface WatchdogSpec {
  cmdFd: number;
  statusFd: number;
  lockArgv: string[];
  unlockArgv: string[];
  env: string;
  sockFds: number[];
  reuse: number[];
  pidfds: number[];
}

function argvBytes(argv: string[]): Uint8Array<ArrayBuffer> {
  const enc = new TextEncoder();
  const parts = argv.map((a) => enc.encode(a));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length + 1, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length + 1;
  }
  return out;
}

/** Forks the connection lock's watchdog (ck_netlock_watchdog); its pid. */
export function forkWatchdog(w: WatchdogSpec): number {
  const lock = argvBytes(w.lockArgv), unlock = argvBytes(w.unlockArgv), env = argvBytes([w.env]);
  const socks = new Int32Array(w.sockFds), reuse = new Int32Array(w.reuse);
  const pidfds = new Int32Array(w.pidfds);
  return check(
    native().ck_netlock_watchdog(
      w.cmdFd,
      w.statusFd,
      lock,
      w.lockArgv.length,
      unlock,
      w.unlockArgv.length,
      env,
      new Uint8Array(socks.buffer),
      new Uint8Array(reuse.buffer),
      socks.length,
      new Uint8Array(pidfds.buffer),
      pidfds.length,
    ),
    "fork",
    "(the connection lock's watchdog)",
  );
}
