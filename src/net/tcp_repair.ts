// A live TCP connection through the kernel's repair mode: what dump reads of
// it, and how restore rebuilds it — sequence numbers, the receive queue, the
// window, TCP options and timestamps, and half-closed states, whose FINs
// repair mode cannot put back by itself. Bytes sent and not acknowledged go
// back as sent (the peer's acknowledgements of them must be valid: an ACK of
// bytes a socket never sent makes it drop the whole segment); bytes never
// sent are sent for real once the lock is gone, so the peer gets them at
// once instead of after retransmission timeouts.
import { create } from "@bufbuild/protobuf";
import {
  type InetSocket,
  type TcpRepairState,
  TcpRepairStateSchema,
} from "../gen/ckpt/images_pb.ts";
import { sock, SOL, tcp } from "../native/inetsk.ts";
import { errnoText, fd as fdops } from "../native/mod.ts";
import { sleepSync } from "../util/sleep.ts";
import { parseSockaddr, withPort } from "./addr.ts";
import { LOCK_MARK } from "./lock.ts";
import { TCP_ACK, TCP_FIN, TCP_RST, tcpSegment } from "./packet.ts";
import { savedInt } from "./options.ts";

export const ST = {
  ESTABLISHED: 1,
  SYN_SENT: 2,
  SYN_RECV: 3,
  FIN_WAIT1: 4,
  FIN_WAIT2: 5,
  CLOSE: 7,
  CLOSE_WAIT: 8,
  LAST_ACK: 9,
  LISTEN: 10,
  CLOSING: 11,
} as const;

const bit = (...s: number[]) => s.reduce((m, x) => m | (1 << x), 0);
/** Our FIN is in the send queue (counted by SIOCOUTQ until acknowledged). */
const SNDQ_FIN = bit(ST.FIN_WAIT1, ST.FIN_WAIT2, ST.CLOSING, ST.LAST_ACK);
/** The peer's FIN was received (counted in rcv_nxt). */
const RCVQ_FIN = bit(ST.CLOSE_WAIT, ST.LAST_ACK, ST.CLOSING);
/** States a connection can be saved and rebuilt in. */
export const REPAIRABLE = bit(
  ST.ESTABLISHED,
  ST.FIN_WAIT1,
  ST.FIN_WAIT2,
  ST.CLOSE_WAIT,
  ST.LAST_ACK,
  ST.CLOSING,
);

export const isRepairable = (state: number) => (REPAIRABLE & (1 << state)) !== 0;

const TCP_REPAIR = 19, TCP_CORK = 3, SO_REUSEADDR = 2, SO_SNDBUF = 7, SO_RCVBUF = 8;
const SO_SNDBUFFORCE = 32, SO_RCVBUFFORCE = 33, TCP_INFO = 11;
const TCP_SEND_QUEUE = 2;
const TCPI_OPT_WSCALE = 4;

/** The connection's state now (TCP_INFO's first byte). */
export function tcpState(fd: number): number {
  const v = sock.get(fd, SOL.TCP, TCP_INFO, 8);
  return typeof v === "number" ? 0 : v[0];
}

/** Bytes of the send queue that are data (a queued FIN counts one). */
function sendLen(r: { outqLen: number }, state: number): number {
  return (SNDQ_FIN & (1 << state)) && r.outqLen > 0 ? r.outqLen - 1 : r.outqLen;
}

/** Dump: reads a locked connection through copy (repair mode for the few
 * calls it takes). Throws with the step that failed. */
export function saveConnection(copy: number, what: string): { state: number; r: TcpRepairState } {
  const s = tcp.save(copy, what);
  if (!isRepairable(s.state)) {
    throw new Error(`${what}: the connection changed state while it was read`);
  }
  const data = sendLen(s, s.state);
  if (s.rq.length !== s.inqLen || s.sq.length !== data) {
    throw new Error(
      `${what}: its queues changed while they were read (${s.rq.length}/${s.inqLen} bytes to read, ` +
        `${s.sq.length}/${data} to send)`,
    );
  }
  return {
    state: s.state,
    r: create(TcpRepairStateSchema, {
      inqLen: s.inqLen,
      outqLen: s.outqLen,
      unsqLen: s.unsqLen,
      inqSeq: s.inqSeq,
      outqSeq: s.outqSeq,
      mssClamp: s.mssClamp,
      timestamp: s.timestamp,
      options: s.options,
      sndWscale: s.sndWscale,
      rcvWscale: s.rcvWscale,
      hasWindow: s.hasWindow !== 0,
      sndWl1: s.sndWl1,
      sndWnd: s.sndWnd,
      maxWindow: s.maxWindow,
      rcvWnd: s.rcvWnd,
      rcvWup: s.rcvWup,
      recvQueue: s.rq,
      sendQueue: s.sq,
    }),
  };
}

/** Why a saved state cannot be rebuilt, for the image validator. */
export function checkRepair(state: number, r: TcpRepairState | undefined): string | undefined {
  if (!r) return "repair state missing";
  if (!isRepairable(state)) return `TCP state ${state} cannot be rebuilt`;
  if (r.recvQueue.length !== r.inqLen) return "receive queue length";
  if (r.sendQueue.length !== sendLen(r, state)) return "send queue length";
  if (r.sndWscale > 14 || r.rcvWscale > 14) return "window scale";
  if (r.mssClamp === 0 || r.mssClamp > 65535) return "MSS";
  return undefined;
}

/** Sequence numbers of a rebuilt connection, FINs accounted for; `sent`:
 * bytes of the send queue that had been sent (the rest, `data - sent`, not). */
function seqs(state: number, r: TcpRepairState) {
  const m = 1 << state;
  const inSeq = (r.inqSeq - (m & RCVQ_FIN ? 1 : 0)) >>> 0;
  const outSeq = (r.outqSeq - (m & SNDQ_FIN ? 1 : 0)) >>> 0;
  const data = sendLen(r, state);
  const unsent = Math.min(data, (m & SNDQ_FIN) && r.unsqLen > 0 ? r.unsqLen - 1 : r.unsqLen);
  return {
    inSeq,
    recvSeq: (inSeq - r.inqLen) >>> 0,
    sendSeq: (outSeq - data) >>> 0,
    data,
    sent: data - unsent,
  };
}

function inject(
  sk: InetSocket,
  seq: number,
  ack: number,
  flags: number,
  window: number,
  what: string,
  toPeer = false,
): void {
  let from = parseSockaddr(sk.peer), to = parseSockaddr(sk.local);
  if (toPeer) [from, to] = [to, from];
  if (!from || !to) throw new Error(`${what}: no addresses to send the peer's segment with`);
  const p = tcpSegment(from, to, seq, ack, flags, window);
  sock.rawSend(p.family, p.packet, p.to, LOCK_MARK, what);
}

/** The window the peer advertised, as its segments carry it. */
function peerWindow(r: TcpRepairState): number {
  return r.options & TCPI_OPT_WSCALE ? r.sndWnd >>> r.sndWscale : r.sndWnd;
}

/** Sets a buffer size big enough for `need` bytes; the old value, to put back. */
function roomFor(fd: number, opt: number, force: number, need: number): number | undefined {
  const now = sock.getInt(fd, SOL.SOCKET, opt);
  const want = 2 * need + 65536;
  if (now >= want) return undefined;
  sock.setInt(fd, SOL.SOCKET, force, want >> 1);
  return now;
}

/** Restore, lock in place: the connection rebuilt in fd (a new socket with
 * its options set), left in repair mode; the peer's FIN given back to a
 * socket that had received one, our acknowledged FIN to one in FIN_WAIT2. */
export function rebuild(
  fd: number,
  sk: InetSocket,
  state: number,
  r: TcpRepairState,
  what: string,
) {
  const { inSeq, recvSeq, sendSeq, sent } = seqs(state, r);
  const m = 1 << state;
  const window = r.hasWindow
    ? {
      sndWl1: r.sndWl1,
      sndWnd: r.sndWnd,
      maxWindow: r.maxWindow,
      rcvWnd: (r.rcvWnd + (m & RCVQ_FIN ? 1 : 0)) >>> 0,
      rcvWup: (r.rcvWup - (m & RCVQ_FIN ? 1 : 0)) >>> 0,
    }
    : undefined;
  const rcvbuf = roomFor(fd, SO_RCVBUF, SO_RCVBUFFORCE, r.recvQueue.length);
  const sndbuf = roomFor(fd, SO_SNDBUF, SO_SNDBUFFORCE, sent);
  tcp.restore(
    fd,
    {
      recvSeq,
      sendSeq,
      options: r.options,
      sndWscale: r.sndWscale,
      rcvWscale: r.rcvWscale,
      mssClamp: r.mssClamp,
      timestamp: r.timestamp,
      window,
    },
    sk.local,
    sk.peer,
    r.recvQueue,
    r.sendQueue.subarray(0, sent),
    what,
  );
  if (rcvbuf !== undefined) sock.setInt(fd, SOL.SOCKET, SO_RCVBUFFORCE, rcvbuf >> 1);
  if (sndbuf !== undefined) sock.setInt(fd, SOL.SOCKET, SO_SNDBUFFORCE, sndbuf >> 1);
  if (state === ST.FIN_WAIT2) {
    // Our FIN, sent and acknowledged: marked sent, then the peer's ACK of it.
    tcp.repairFin(fd, TCP_SEND_QUEUE, what);
    inject(sk, inSeq, (sendSeq + 1) >>> 0, TCP_ACK, peerWindow(r), what);
  }
  if (state === ST.CLOSE_WAIT || state === ST.LAST_ACK) {
    // The peer's FIN acknowledges what it had received: snd_una.
    inject(sk, inSeq, sendSeq, TCP_FIN | TCP_ACK, peerWindow(r), what);
  }
  const expect = state === ST.LAST_ACK
    ? ST.CLOSE_WAIT
    : state === ST.CLOSING || state === ST.FIN_WAIT1
    ? ST.ESTABLISHED
    : state;
  awaitState(fd, expect, what);
}

/** An injected segment is handled in softirq context, usually before the
 * send returns: waits a little for it when it is not. */
function awaitState(fd: number, want: number, what: string): void {
  const end = performance.now() + 200;
  let now = tcpState(fd);
  while (now !== want && performance.now() < end) {
    sleepSync(1);
    now = tcpState(fd);
  }
  if (now !== want) {
    throw new Error(`${what}: the rebuilt connection is in TCP state ${now}, not ${want}`);
  }
}

/** Restore, lock gone, just before the tree runs: out of repair mode (the
 * window probe tells the peer where we are), SO_REUSEADDR back (leaving
 * repair clears it), the send queue sent, and our FIN where we had sent one. */
export function finishConnection(
  fd: number,
  sk: InetSocket,
  state: number,
  r: TcpRepairState,
  what: string,
): void {
  const fail = (step: string, err: number) => {
    if (err) throw new Error(`${what}: ${step} failed: ${errnoText(err)}`);
  };
  fail("leaving repair mode", sock.setInt(fd, SOL.TCP, TCP_REPAIR, 0));
  if (savedInt(sk.opts, SOL.SOCKET, SO_REUSEADDR)) {
    fail("SO_REUSEADDR", sock.setInt(fd, SOL.SOCKET, SO_REUSEADDR, 1));
  }
  const { inSeq, sendSeq, data, sent } = seqs(state, r);
  // The peer may hold a segment the lock dropped, waiting for a timer to
  // send it again: three duplicate ACKs (what this socket would send) make
  // it send at once; a peer with nothing outstanding ignores them.
  const sndNxt = (sendSeq + sent + (state === ST.FIN_WAIT2 ? 1 : 0)) >>> 0;
  const ourWindow = r.options & TCPI_OPT_WSCALE ? r.rcvWnd >>> r.rcvWscale : r.rcvWnd;
  for (let i = 0; i < 3; i++) inject(sk, sndNxt, r.inqSeq, TCP_ACK, ourWindow, what, true);
  if (data > sent) {
    // A cork would hold back what the peer may already be waiting for.
    const cork = savedInt(sk.opts, SOL.TCP, TCP_CORK);
    if (cork) sock.setInt(fd, SOL.TCP, TCP_CORK, 0);
    const sndbuf = roomFor(fd, SO_SNDBUF, SO_SNDBUFFORCE, data);
    sock.sendAll(fd, r.sendQueue.subarray(sent, data), what);
    if (sndbuf !== undefined) sock.setInt(fd, SOL.SOCKET, SO_SNDBUFFORCE, sndbuf >> 1);
    if (cork) sock.setInt(fd, SOL.TCP, TCP_CORK, cork);
  }
  if (state === ST.FIN_WAIT1 || state === ST.CLOSING || state === ST.LAST_ACK) {
    fail("shutdown(SHUT_WR)", sock.shutdown(fd, 1));
  }
  if (state === ST.CLOSING) {
    // The peer's FIN came after ours was sent: given back after it.
    inject(sk, inSeq, sendSeq, TCP_FIN | TCP_ACK, peerWindow(r), what);
  }
}

/** Restore with --tcp-close: a socket with the dumped local address whose
 * connection was reset by its peer (its next read says ECONNRESET), made by
 * connecting it in repair mode and sending it the peer's reset. */
export function rebuildReset(make: () => number, sk: InetSocket, what: string): number {
  const peer = parseSockaddr(sk.peer);
  let last: unknown;
  // The old connection may still linger (FIN_WAIT, TIME_WAIT) on its
  // 4-tuple; any peer port does: a reset socket has no peer to show.
  for (const port of [peer?.port ?? 1, 1, 2, 3]) {
    const fd = make();
    try {
      const to = withPort(sk.peer, port);
      tcp.restore(
        fd,
        {
          recvSeq: 1,
          sendSeq: 1,
          options: 0,
          sndWscale: 0,
          rcvWscale: 0,
          mssClamp: 1460,
          timestamp: 0,
        },
        sk.local,
        to,
        new Uint8Array(),
        new Uint8Array(),
        what,
      );
      inject({ ...sk, peer: to }, 1, 0, TCP_RST, 0, what);
      awaitState(fd, ST.CLOSE, what);
      sock.setInt(fd, SOL.TCP, TCP_REPAIR, 0);
      return fd;
    } catch (err) {
      fdops.close(fd);
      last = err;
      const e = err as { errno?: number; step?: string };
      if (!(e.errno === 99 && e.step === "connect in repair mode")) break;
    }
  }
  throw last;
}
