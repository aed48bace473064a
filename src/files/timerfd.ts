// timerfd: its clock, flags, interval, time left and the expirations not
// read yet. Time spent dumped does not count for a relative timer: it fires
// the time it had left after the task runs again (re-armed by the task as
// the last thing before it does, so restore time does not count either).
// An absolute one (TFD_TIMER_ABSTIME) fires at its absolute time: at once if
// that passed meanwhile, with the periods missed counted as expirations.
import { create } from "@bufbuild/protobuf";
import { FileKind, type TimerFdFile, TimerFdFileSchema } from "../gen/ckpt/images_pb.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { anonfd, CLOCK_MONOTONIC } from "../native/anonfd.ts";
import { readProcText } from "../proc/read.ts";
import { log } from "../util/log.ts";
import { OP, PHASE, type PlanOp } from "../restore/plan_buffer.ts";
import type { FileKindOps } from "./kind.ts";

const TFD_TIMER_ABSTIME = 1, TFD_TIMER_CANCEL_ON_SET = 2;
const NR_TIMERFD_SETTIME = 286, NR_IOCTL = 16;
const TFD_IOC_SET_TICKS = 0x40085400;
/** Clocks timerfd_create takes: REALTIME, MONOTONIC, BOOTTIME and the two alarms. */
const CLOCKS = new Set([0, 1, 7, 8, 9]);
const NS = 1_000_000_000n;

/** fdinfo's "key: value" lines. */
function fields(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

function itimerspec(valueNs: bigint, intervalNs: bigint): Uint8Array {
  const b = new BigInt64Array([intervalNs / NS, intervalNs % NS, valueNs / NS, valueNs % NS]);
  return new Uint8Array(b.buffer);
}

function u64(v: bigint): Uint8Array {
  return new Uint8Array(new BigUint64Array([v]).buffer);
}

/** The expiry to give timerfd_settime now, with its flags: an absolute
 * timer keeps its absolute time, unless its clock went back since the dump
 * (another boot), where only the time left still means anything. */
function expiry(t: TimerFdFile, where: string): { flags: number; valueNs: bigint } {
  if (!(t.settimeFlags & TFD_TIMER_ABSTIME) || t.valueNs === 0n) {
    return { flags: t.settimeFlags & TFD_TIMER_ABSTIME, valueNs: t.valueNs };
  }
  const now = anonfd.clockNs(t.clockid);
  if (now < t.clockNs) {
    log.warn(
      `${where}: clock ${t.clockid} is behind the dump's (another boot?): the absolute timer ` +
        `is set to fire after the time it had left`,
    );
    return { flags: 0, valueNs: t.valueNs };
  }
  return { flags: t.settimeFlags, valueNs: t.clockNs + t.valueNs };
}

export const timerfd: FileKindOps = {
  name: "timerfd",
  kinds: [FileKind.FILE_TIMERFD],

  claims: (fd) => fd.link === "anon_inode:[timerfd]",

  dump(fd, ctx) {
    const clockid = Number(fd.info.get("clockid") ?? "1");
    const copy = ctx.copyFd(fd.pid, fd.fd, fd.where);
    let now;
    try {
      now = anonfd.timerfdGettime(copy, clockid);
    } finally {
      fdops.close(copy);
    }
    // Read after gettime, which counts the expirations of a periodic timer
    // nobody read since it fired (as the program's next read would).
    const info = fields(readProcText(fd.pid, `fdinfo/${fd.fd}`));
    const settimeFlags = parseInt(info.get("settime flags") ?? "0", 8) &
      (TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET);
    // A relative timer keeps what it had left when the tree stopped, not
    // when ckpt came to read it.
    let valueNs = now.valueNs;
    if (valueNs > 0n && !(settimeFlags & TFD_TIMER_ABSTIME) && ctx.frozenAtNs > 0n) {
      const since = anonfd.clockNs(CLOCK_MONOTONIC) - ctx.frozenAtNs;
      if (since > 0n) valueNs += since;
    }
    return {
      kind: FileKind.FILE_TIMERFD,
      timerfd: create(TimerFdFileSchema, {
        clockid,
        flags: fd.flags & O.NONBLOCK,
        settimeFlags,
        ticks: BigInt(info.get("ticks") ?? "0"),
        valueNs,
        intervalNs: now.intervalNs,
        clockNs: now.clockNs,
      }),
    };
  },

  validate(f, fail) {
    const t = f.timerfd ?? fail("timerfd details missing");
    if (!CLOCKS.has(t.clockid)) fail(`timerfd clock ${t.clockid} is not one timerfd takes`);
    if (t.settimeFlags & ~(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET)) {
      fail(`timerfd settime flags 0${t.settimeFlags.toString(8)} are unknown`);
    }
    const max = 1n << 62n;
    if (t.valueNs >= max || t.intervalNs >= max || t.clockNs >= max) fail("timerfd times overflow");
  },

  open(f, _ctx, where) {
    const t = f.timerfd!;
    const n = anonfd.timerfdCreate(t.clockid, O.CLOEXEC | (t.flags & O.NONBLOCK));
    // Armed here for a timerfd no task holds (one in flight in a socket
    // queue); a holder re-arms a relative one itself (taskOps).
    const e = expiry(t, where);
    anonfd.timerfdSettime(
      n,
      e.flags | (t.settimeFlags & TFD_TIMER_CANCEL_ON_SET),
      e.valueNs,
      t.intervalNs,
    );
    if (t.ticks > 0n) anonfd.setTicks(n, t.ticks);
    return n;
  },

  taskOps(f, holding) {
    const t = f.timerfd!;
    if (!holding.first || t.valueNs === 0n || (t.settimeFlags & TFD_TIMER_ABSTIME)) return [];
    const fd = holding.fds[0];
    const where = `timerfd fd ${fd} of pid ${holding.task.pid}`;
    const ops: PlanOp[] = [{
      op: OP.SYSCALL,
      phase: PHASE.LAST,
      a: [NR_TIMERFD_SETTIME, fd, 0, { bytes: itimerspec(t.valueNs, t.intervalNs) }, 0],
      what: `arming ${where} with the time it had left`,
    }];
    // settime clears the count: put it back.
    if (t.ticks > 0n) {
      ops.push({
        op: OP.SYSCALL,
        phase: PHASE.LAST,
        a: [NR_IOCTL, fd, TFD_IOC_SET_TICKS, { bytes: u64(t.ticks) }],
        what: `setting the expirations of ${where}`,
      });
    }
    return ops;
  },
};
