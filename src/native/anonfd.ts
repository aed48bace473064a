// Typed wrappers for ffi/anonfd.zig: epoll, timerfd and signalfd files made
// in ckpt, an epoll's registrations read in one call, and the timer readout.
import { native } from "./load.ts";
import { check } from "./mod.ts";

/** One registration of an epoll set, as its fdinfo line gives it. */
export interface EpollTarget {
  tfd: number;
  events: number;
  data: bigint;
  ino: number;
  /** Index among the registrations under the same tfd (kcmp's toff). */
  toff: number;
  /** The kernel's superblock dev (MAJOR << 20 | MINOR). */
  sdev: number;
  /** Fd tfd of the epoll's task holds the target file itself. */
  same: boolean;
}

const TARGET_SIZE = 40;
const FD_STAT_SIZE = 24;
export const CLOCK_MONOTONIC = 1;
const enc = new TextEncoder();

/** A task's fd table as the dump read it, for epollTargets: fd order. */
export function fdStats(table: readonly { fd: number; st: Deno.FileInfo }[]): Uint8Array {
  const inOrder = table.every((e, i) => i === 0 || table[i - 1].fd < e.fd);
  const sorted = inOrder ? table : table.toSorted((a, b) => a.fd - b.fd);
  const out = new Uint8Array(sorted.length * FD_STAT_SIZE);
  const dv = new DataView(out.buffer);
  sorted.forEach(({ fd, st }, i) => {
    const o = i * FD_STAT_SIZE;
    dv.setInt32(o, fd, true);
    dv.setUint32(o + 4, st.mode ?? 0, true);
    u64(dv, o + 8, st.dev ?? 0);
    u64(dv, o + 16, st.ino ?? 0);
  });
  return out;
}

/** A safe integer as a little-endian u64, without a BigInt. */
function u64(dv: DataView, o: number, v: number): void {
  dv.setUint32(o, v % 0x1_0000_0000, true);
  dv.setUint32(o + 4, Math.floor(v / 0x1_0000_0000), true);
}

/** The entries of fdStats. */
export function* readFdStats(
  stats: Uint8Array,
): Generator<{ fd: number; mode: number; dev: number; ino: number }> {
  const dv = new DataView(stats.buffer, stats.byteOffset, stats.byteLength);
  for (let o = 0; o + FD_STAT_SIZE <= stats.length; o += FD_STAT_SIZE) {
    yield {
      fd: dv.getInt32(o, true),
      mode: dv.getUint32(o + 4, true),
      dev: Number(dv.getBigUint64(o + 8, true)),
      ino: Number(dv.getBigUint64(o + 16, true)),
    };
  }
}

/** An epoll's registrations as ck_epoll_targets laid them out, read by
 * index: ten thousand of them need no object each. */
export class EpollTargets {
  private readonly dv: DataView;
  constructor(buf: Uint8Array, readonly length: number) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  tfd(i: number): number {
    return this.dv.getInt32(i * TARGET_SIZE, true);
  }
  events(i: number): number {
    return this.dv.getUint32(i * TARGET_SIZE + 4, true);
  }
  data(i: number): bigint {
    return this.dv.getBigUint64(i * TARGET_SIZE + 8, true);
  }
  /** Fd tfd of the epoll's task holds the target file itself. */
  same(i: number): boolean {
    return this.dv.getInt32(i * TARGET_SIZE + 32, true) === 1;
  }
  /** Target i whole. */
  at(i: number): EpollTarget {
    const dv = this.dv, o = i * TARGET_SIZE;
    return {
      tfd: dv.getInt32(o, true),
      events: dv.getUint32(o + 4, true),
      data: dv.getBigUint64(o + 8, true),
      ino: dv.getUint32(o + 16, true) + dv.getUint32(o + 20, true) * 0x1_0000_0000,
      toff: dv.getUint32(o + 24, true),
      sdev: dv.getUint32(o + 28, true),
      same: dv.getInt32(o + 32, true) === 1,
    };
  }
}

/** Parses the fdinfo of epoll fd epfd of pid (its text given, or its raw
 * bytes) and tells, for each target, whether the task's own fd tfd is that
 * file; `known` (fdStats of the task's table) spares looking each fd up
 * again. */
export function epollTargets(
  pid: number,
  epfd: number,
  info: string | Uint8Array,
  known: Uint8Array = new Uint8Array(0),
): EpollTargets {
  const text = typeof info === "string" ? enc.encode(info) : info;
  // A target's line is some 60 bytes or more: room for all at once.
  let room = Math.max(64, Math.ceil(text.length / 48));
  for (;;) {
    const out = new Uint8Array(room * TARGET_SIZE);
    const n = check(
      native().ck_epoll_targets(
        pid,
        epfd,
        text,
        BigInt(text.length),
        out,
        BigInt(room),
        new Uint8Array(known.buffer, known.byteOffset, known.byteLength),
        BigInt(known.length / FD_STAT_SIZE),
      ),
      "reading epoll targets",
      `of fd ${epfd} of pid ${pid}`,
    );
    if (n > room) {
      room = n;
      continue;
    }
    return new EpollTargets(out, n);
  }
}

/** Whether fd `fd` of pid1 is the file registered in epoll efd of pid2
 * under (tfd, toff). */
export function isEpollTarget(
  pid1: number,
  fd: number,
  pid2: number,
  efd: number,
  tfd: number,
  toff: number,
): boolean {
  return native().ck_kcmp_epoll_tfd(pid1, fd, pid2, efd, tfd, toff) === 0n;
}

export const anonfd = {
  epollCreate(flags: number): number {
    return check(native().ck_epoll_create1(flags), "epoll_create1");
  },
  timerfdCreate(clockid: number, flags: number): number {
    return check(native().ck_timerfd_create(clockid, flags), "timerfd_create", `clock ${clockid}`);
  },
  timerfdSettime(fd: number, flags: number, valueNs: bigint, intervalNs: bigint): void {
    check(native().ck_timerfd_settime(fd, flags, valueNs, intervalNs), "timerfd_settime");
  },
  /** Time left, interval and the clock's reading right after. */
  timerfdGettime(
    fd: number,
    clockid: number,
  ): { valueNs: bigint; intervalNs: bigint; clockNs: bigint } {
    const out = new BigUint64Array(3);
    check(
      native().ck_timerfd_gettime(fd, clockid, new Uint8Array(out.buffer)),
      "timerfd_gettime",
    );
    return { valueNs: out[0], intervalNs: out[1], clockNs: out[2] };
  },
  setTicks(fd: number, ticks: bigint): void {
    check(native().ck_timerfd_set_ticks(fd, ticks), "ioctl(TFD_IOC_SET_TICKS)");
  },
  clockNs(clockid: number): bigint {
    const out = new BigUint64Array(1);
    check(native().ck_clock_ns(clockid, new Uint8Array(out.buffer)), "clock_gettime");
    return out[0];
  },
  signalfd(mask: bigint, flags: number): number {
    return check(native().ck_signalfd(mask, flags), "signalfd4");
  },
  /** A pidfd (O_CLOEXEC) of a process that has exited and been reaped. */
  deadPidfd(): number {
    return check(native().ck_dead_pidfd(), "making a pidfd of an exited process");
  },
};
