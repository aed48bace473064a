// POSIX timers (timer_create) of a process, both halves. Dump: what
// /proc/PID/timers shows (id, signal and sigev value, notification and its
// thread, clock) plus what only the task can say, time left and interval
// (timer_gettime) and the last overrun count (timer_getoverrun), injected.
// Restore: ops the restorer runs once every thread exists (a SIGEV_THREAD_ID
// timer needs its thread), with the kernel told to take each timer's id from
// the caller (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.16+) so the program's
// timer_t values stay valid.
import { create } from "@bufbuild/protobuf";
import { type PosixTimer, PosixTimerSchema, type TaskCore } from "../gen/ckpt/images_pb.ts";
import type { Injector } from "../dump/inject.ts";
import { readProcText } from "../proc/read.ts";
import { OP, PHASE, type PlanOp } from "../restore/plan_buffer.ts";
import { log } from "../util/log.ts";

const SYS_prctl = 157, SYS_timer_create = 222, SYS_timer_settime = 223;
const SYS_timer_gettime = 224, SYS_timer_getoverrun = 225;
const PR_TIMER_CREATE_RESTORE_IDS = 77, RESTORE_IDS_OFF = 0, RESTORE_IDS_ON = 1;
export const SIGEV = { SIGNAL: 0, NONE: 1, THREAD: 2, THREAD_ID: 4 } as const;
const CLOCK_THREAD_CPUTIME_ID = 3, CLOCK_REALTIME_ALARM = 8, CLOCK_BOOTTIME_ALARM = 9;
const CAP_WAKE_ALARM = 35n;
/** Far more than any program makes (a bound for damaged images). */
export const MAX_TIMERS = 1 << 16;

/** One timer as /proc/PID/timers lists it. */
export interface ProcTimer {
  id: number;
  signo: number;
  value: bigint;
  notify: number;
  target: number;
  clock: number;
}

export function parseProcTimers(text: string): ProcTimer[] {
  const out: ProcTimer[] = [];
  let cur: Partial<ProcTimer> = {};
  for (const line of text.split("\n")) {
    let m: RegExpExecArray | null;
    if ((m = /^ID: (-?\d+)$/.exec(line))) cur = { id: Number(m[1]) };
    else if ((m = /^signal: (\d+)\/([0-9a-f]+)$/.exec(line))) {
      cur.signo = Number(m[1]);
      cur.value = BigInt(`0x${m[2]}`);
    } else if ((m = /^notify: (\w+)\/(pid|tid)\.(\d+)$/.exec(line))) {
      const base = { signal: SIGEV.SIGNAL, none: SIGEV.NONE, thread: SIGEV.THREAD }[m[1]];
      if (base === undefined) throw new Error(`unknown timer notification in: ${line}`);
      cur.notify = base | (m[2] === "tid" ? SIGEV.THREAD_ID : 0);
      cur.target = Number(m[3]);
    } else if ((m = /^ClockID: (-?\d+)$/.exec(line))) {
      cur.clock = Number(m[1]);
      if (cur.id === undefined || cur.signo === undefined || cur.notify === undefined) {
        throw new Error(`incomplete timer entry before: ${line}`);
      }
      out.push(cur as ProcTimer);
      cur = {};
    }
  }
  return out.sort((a, b) => a.id - b.id);
}

/** What a CPU-time clock id measures (clock_getcpuclockid and
 * pthread_getcpuclockid encode a pid or tid), or undefined for a plain clock. */
function cpuClockOwner(clock: number): { pid: number; thread: boolean; fd: boolean } | undefined {
  if (clock >= 0) return undefined;
  // CPUCLOCK_PID(c) = ~(c >> 3); low bits: 0..2 which clock, 4 per thread, 3 a clock fd.
  return { pid: ~(clock >> 3), thread: (clock & 4) !== 0, fd: (clock & 7) === 3 };
}

/** Why timer t of pid cannot be recreated exactly, if it cannot. */
function refusal(pid: number, tids: number[], capEff: bigint, t: ProcTimer): string | undefined {
  const at = `pid ${pid}: POSIX timer ${t.id}`;
  if (t.notify & SIGEV.THREAD_ID && !tids.includes(t.target)) {
    return `${at} signals thread ${t.target}, which has exited; it cannot be recreated`;
  }
  if (t.clock === CLOCK_THREAD_CPUTIME_ID && tids.length > 1) {
    return `${at} counts the CPU time of the thread that created it, which /proc does not ` +
      `name in a process with ${tids.length} threads; it cannot be dumped`;
  }
  const cpu = cpuClockOwner(t.clock);
  if (cpu?.fd) return `${at} runs on a dynamic clock (a PTP clock fd), which cannot be dumped yet`;
  if (cpu && (cpu.thread ? !tids.includes(cpu.pid) : cpu.pid !== pid)) {
    return `${at} counts the CPU time of ${cpu.thread ? "thread" : "pid"} ${cpu.pid}, ` +
      `outside this process; it cannot be dumped yet`;
  }
  const alarm = t.clock === CLOCK_REALTIME_ALARM || t.clock === CLOCK_BOOTTIME_ALARM;
  if (alarm && ((capEff >> CAP_WAKE_ALARM) & 1n) === 0n) {
    return `${at} is an alarm timer (clock ${t.clock}) of a task that no longer has ` +
      `CAP_WAKE_ALARM, so it could not create it again`;
  }
  return undefined;
}

/** The timers of pid (frozen, injector ready), or the reasons some cannot
 * be saved. Two injected calls per timer. */
export function collectPosixTimers(
  pid: number,
  tids: number[],
  inj: Injector,
  capEff: bigint,
): { timers: PosixTimer[]; refused: string[] } {
  const listed = parseProcTimers(readProcText(pid, "timers"));
  const refused = listed.map((t) => refusal(pid, tids, capEff, t)).filter((r) => r !== undefined);
  if (refused.length || listed.length === 0) return { timers: [], refused };
  if (listed.length > MAX_TIMERS) {
    return { timers: [], refused: [`pid ${pid} has ${listed.length} POSIX timers`] };
  }
  const timers = listed.map((t) => {
    inj.call(SYS_timer_gettime, [t.id, inj.scratch], `timer_gettime(${t.id})`);
    const its = inj.read(32); // struct itimerspec: interval, then value
    const overrun = Number(inj.call(SYS_timer_getoverrun, [t.id], `timer_getoverrun(${t.id})`));
    if (overrun > 0) {
      log.info(
        `pid ${pid}: POSIX timer ${t.id} last overran ${overrun} time(s); after restore ` +
          `timer_getoverrun reads 0 until it next fires`,
      );
    }
    return create(PosixTimerSchema, {
      id: t.id,
      clockId: t.clock,
      signo: t.signo,
      sigevValue: t.value,
      notify: t.notify,
      notifyTid: t.notify & SIGEV.THREAD_ID ? t.target : 0,
      intervalSec: its.getBigInt64(0, true),
      intervalNsec: its.getBigInt64(8, true),
      valueSec: its.getBigInt64(16, true),
      valueNsec: its.getBigInt64(24, true),
      overrun,
    });
  });
  return { timers, refused };
}

/** Checks a core's timers before anything is restored; `fail` throws. */
export function validatePosixTimers(c: TaskCore, fail: (why: string) => never): void {
  if (c.posixTimers.length > MAX_TIMERS) fail(`${c.posixTimers.length} POSIX timers`);
  const ids = new Set<number>();
  const tids = new Set(c.threads.map((t) => t.tid));
  for (const t of c.posixTimers) {
    const at = `POSIX timer ${t.id}`;
    if (t.id < 0 || ids.has(t.id)) fail(`${at}: id negative or repeated`);
    ids.add(t.id);
    if (t.signo > 64) fail(`${at}: signal ${t.signo} does not exist`);
    const base = t.notify & ~SIGEV.THREAD_ID;
    if (base > SIGEV.THREAD || (t.notify & SIGEV.THREAD_ID && base !== SIGEV.SIGNAL)) {
      fail(`${at}: unknown notification ${t.notify}`);
    }
    if (t.notify & SIGEV.THREAD_ID && !tids.has(t.notifyTid)) {
      fail(`${at}: signals thread ${t.notifyTid}, which the task does not have`);
    }
    for (const ns of [t.valueNsec, t.intervalNsec]) {
      if (ns < 0n || ns > 999_999_999n) fail(`${at}: nanoseconds ${ns} out of range`);
    }
    if (t.valueSec < 0n || t.intervalSec < 0n) fail(`${at}: negative time`);
  }
}

/** The restorer's ops that create the timers again, each with its id, and
 * arm those that were armed (relative to now: the time left at dump). */
export function posixTimerOps(core: TaskCore): PlanOp[] {
  if (core.posixTimers.length === 0) return [];
  const phase = PHASE.AFTER_THREADS;
  const ops: PlanOp[] = [{
    op: OP.SYSCALL,
    phase,
    a: [SYS_prctl, PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_ON, 0, 0, 0],
    what: "prctl(PR_TIMER_CREATE_RESTORE_IDS), which restoring POSIX timer ids needs (Linux 6.16+)",
  }];
  for (const t of core.posixTimers) {
    const sev = new Uint8Array(64); // struct sigevent
    const dv = new DataView(sev.buffer);
    dv.setBigUint64(0, t.sigevValue, true);
    dv.setInt32(8, t.signo, true);
    dv.setInt32(12, t.notify, true);
    dv.setInt32(16, t.notifyTid, true);
    const id = new Uint8Array(4);
    new DataView(id.buffer).setInt32(0, t.id, true);
    ops.push({
      op: OP.SYSCALL,
      phase,
      a: [SYS_timer_create, t.clockId, { bytes: sev }, { bytes: id }],
      what: `creating POSIX timer ${t.id} (clock ${t.clockId}) again with its id`,
    });
    if (t.valueSec === 0n && t.valueNsec === 0n) continue;
    const its = new Uint8Array(32);
    const iv = new DataView(its.buffer);
    iv.setBigInt64(0, t.intervalSec, true);
    iv.setBigInt64(8, t.intervalNsec, true);
    iv.setBigInt64(16, t.valueSec, true);
    iv.setBigInt64(24, t.valueNsec, true);
    ops.push({
      op: OP.SYSCALL,
      phase,
      a: [SYS_timer_settime, t.id, 0, { bytes: its }, 0],
      what: `arming POSIX timer ${t.id}`,
    });
  }
  ops.push({
    op: OP.SYSCALL,
    phase,
    a: [SYS_prctl, PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_OFF, 0, 0, 0],
    what: "prctl(PR_TIMER_CREATE_RESTORE_IDS, off)",
  });
  return ops;
}
