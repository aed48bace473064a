// The time a timed wait had left when the freeze interrupted it. The kernel
// keeps that deadline only in the thread's restart block (poll, nanosleep
// without rem, FUTEX_WAIT) or nowhere at all (epoll_wait, sigtimedwait end
// with EINTR), and neither can be read from outside. What can be seen is the
// thread's own sleep timer: an `hrtimer_wakeup` entry of /proc/timer_list,
// with its expiry, that the interrupt cancels. So a thread that
// /proc/TID/syscall shows blocked in such a wait is interrupted alone, between
// two reads of /proc/timer_list: the timer that went away early in between
// (not expired: its time had not come) and fits the call is its timer. Other
// threads of the machine cancel timers too (about one per millisecond per CPU
// on a busy one), so a candidate must also sit on the CPU the thread last ran
// on (where it armed it), have the slack the kernel gives that call (the
// thread's timer_slack_ns, or for poll and epoll_wait a thousandth of the
// timeout), and never come back: the timer lives on the thread's kernel
// stack, so a thread that woke early and sleeps again shows the same address
// with a new expiry, while the frozen thread cannot. Anything ambiguous gives
// no answer, and the whole timeout is waited again ("unknown" in the image).
import { vmRead } from "../native/mod.ts";
import { sleepSync } from "../util/sleep.ts";
import { log } from "../util/log.ts";
import { type Timeout, WAITS } from "../restore/waits.ts";

/** A thread blocked in a timed wait, as seen before the freeze. */
export interface TimedWait {
  /** The call's relative timeout. */
  timeoutNs: bigint;
  /** The CPU it last ran on: where it armed its timer. */
  cpu: string;
  /** Its timer_slack_ns. */
  slackNs: bigint;
  /** poll and epoll_wait: the kernel sets the slack from the wait's length. */
  estimated: boolean;
}

/** The timed wait tid is blocked in now, if it is one whose time left cannot
 * be seen afterwards. */
export function timedWaitOf(tid: number): TimedWait | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${tid}/syscall`).trim();
  } catch {
    return undefined;
  }
  const f = text.split(" ");
  const call = WAITS[Number(f[0])];
  if (!call || f.length < 7) return undefined;
  const args = f.slice(1, 7).map((x) => BigInt(x));
  const t = call.timeout(args);
  const timeoutNs = timeoutOf(tid, t);
  if (timeoutNs === undefined) return undefined;
  try {
    const stat = Deno.readTextFileSync(`/proc/${tid}/stat`);
    const cpu = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[36];
    const slackNs = BigInt(Deno.readTextFileSync(`/proc/${tid}/timerslack_ns`).trim());
    return { timeoutNs, cpu, slackNs, estimated: t.kind === "ms" };
  } catch {
    return undefined;
  }
}

function timeoutOf(tid: number, t: Timeout): bigint | undefined {
  if (t.kind === "ms") return t.ms > 0n ? t.ms * 1_000_000n : undefined;
  if (t.kind !== "ts") return undefined;
  const ns = readTimespec(tid, t.addr);
  return ns && ns > 0n ? ns : undefined;
}

/** A struct timespec of the task, in ns; undefined if unreadable or invalid. */
export function readTimespec(pid: number, addr: bigint): bigint | undefined {
  try {
    const b = vmRead(pid, addr, 16);
    const dv = new DataView(b.buffer, b.byteOffset, 16);
    const sec = dv.getBigInt64(0, true), nsec = dv.getBigInt64(8, true);
    if (sec < 0n || nsec < 0n || nsec >= 1_000_000_000n) return undefined;
    return sec * 1_000_000_000n + nsec;
  } catch {
    return undefined;
  }
}

interface Timer {
  cpu: string;
  /** The hrtimer's (hashed) address. */
  id: string;
  left: bigint;
  slack: bigint;
}

interface Snapshot {
  /** performance.now() just before the read, and how long it took (ns). */
  at: number;
  took: bigint;
  /** key (cpu, clock base, timer, expiry) -> the timer. */
  timers: Map<string, Timer>;
  ids: Set<string>;
}

/** The armed hrtimer_wakeup timers (sleeping threads' timers). */
function snapshot(): Snapshot | undefined {
  const at = performance.now();
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/timer_list");
  } catch {
    return undefined;
  }
  const timers = new Map<string, Timer>();
  let cpu = "", clock = "";
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (l.startsWith("cpu: ")) cpu = l.slice(5);
    else if (l.startsWith(" clock ")) clock = l.slice(7);
    else if (l.includes(", hrtimer_wakeup,")) {
      const m = /expires at (\d+)-(\d+) nsecs \[in (-?\d+) to/.exec(lines[i + 1] ?? "");
      if (!m) continue;
      const id = /<([0-9a-f]+)>/.exec(l)?.[1] ?? "";
      timers.set(`${cpu}/${clock}/${id}/${m[1]}`, {
        cpu,
        id,
        left: BigInt(m[3]),
        slack: BigInt(m[2]) - BigInt(m[1]),
      });
    }
  }
  const took = BigInt(Math.round((performance.now() - at) * 1e6));
  return { at, took, timers, ids: new Set([...timers.values()].map((t) => t.id)) };
}

/** Times the interrupts of threads in timed waits, one at a time: each read
 * of /proc/timer_list is the one after a thread's interrupt and the one
 * before the next's. */
export class TimerWatch {
  private last = snapshot();

  /** `interrupt` stops tid. Returns the ns its timeout had left at the
   * interrupt, if seen for sure. */
  interrupt(tid: number, w: TimedWait, interrupt: () => void): bigint | undefined {
    const before = this.last;
    const t0 = performance.now();
    interrupt();
    const after = this.last = snapshot();
    if (!before || !after) return undefined;
    // A timer whose time came before the second read got to it expired.
    const expired = BigInt(Math.round((after.at - before.at) * 1e6)) + after.took;
    let gone = [...before.timers.values()].filter((t) =>
      !after.ids.has(t.id) && t.left > expired && t.cpu === w.cpu && fits(t, w)
    );
    if (gone.length > 1) {
      // Threads woken early are mostly asleep again a moment later.
      sleepSync(2);
      const later = snapshot();
      if (later) gone = gone.filter((t) => !later.ids.has(t.id));
    }
    if (gone.length !== 1) {
      log.debug(`thread ${tid}: ${gone.length} candidate timers for its wait; time left unknown`);
      return undefined;
    }
    const left = gone[0].left - BigInt(Math.round((t0 - before.at) * 1e6));
    return left > 0n ? left : 0n;
  }
}

const MS = 1_000_000n, MAX_SLACK = 100n * MS;

/** Whether a timer could be the one thread w armed for its wait: no more
 * left than the whole timeout, and the slack the kernel gives that call —
 * the thread's own, or for poll and epoll_wait the timeout (the call was
 * not restarted: /proc/TID/syscall would show restart_syscall) over 1000
 * (over 200 for a niced task), at least the thread's, at most 100 ms. */
function fits(t: Timer, w: TimedWait): boolean {
  if (t.left > w.timeoutNs + MS) return false;
  if (!w.estimated) return t.slack === w.slackNs;
  return [1000n, 200n].some((div) => {
    let want = w.timeoutNs / div;
    if (want > MAX_SLACK) want = MAX_SLACK;
    if (want < w.slackNs) want = w.slackNs;
    // Computed from the time to go when the wait began, a hair under it.
    return t.slack <= want && t.slack >= want - want / 100n - 1000n;
  });
}
