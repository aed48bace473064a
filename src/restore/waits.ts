// Waits a freeze interrupted, entered again. The kernel keeps how poll,
// nanosleep and futex with a timeout go on (their restart block) to itself,
// and a freeze ends epoll_wait and sigtimedwait with EINTR outright; such a
// thread is given back its system call in the ERESTARTNOHAND form (orig_rax
// the call, rax -ERESTARTNOHAND), with the timeout replaced by what was left.
// When the thread resumes, the kernel's own signal-return logic then does
// what it would have done: a signal handler that runs first makes the call
// return EINTR, as any signal would have; otherwise the call is entered again.
import { REG, regsView } from "../dump/regs.ts";
import type { TaskCore } from "../gen/ckpt/images_pb.ts";
import { OP, PHASE, type PlanOp } from "./plan_buffer.ts";

/** How a call gives its timeout. "none": no timeout, or an absolute
 * deadline, which needs no change. "ms": milliseconds in argument `arg`.
 * "ts": a relative struct timespec at `addr` (argument `arg`). */
export type Timeout =
  | { kind: "none" }
  | { kind: "ms"; arg: number; ms: bigint }
  | { kind: "ts"; arg: number; addr: bigint };

export interface WaitCall {
  name: string;
  /** A freeze ends it with EINTR (else with ERESTART_RESTARTBLOCK). */
  eintr: boolean;
  timeout(args: bigint[]): Timeout;
  /** Argument where the kernel writes back the time left (nanosleep's rem). */
  rem?: number;
}

const i32 = (v: bigint) => BigInt.asIntN(32, v);
const ms = (arg: number) => (a: bigint[]): Timeout =>
  i32(a[arg]) < 0n ? { kind: "none" } : { kind: "ms", arg, ms: i32(a[arg]) };
const ts = (arg: number) => (a: bigint[]): Timeout =>
  a[arg] === 0n ? { kind: "none" } : { kind: "ts", arg, addr: a[arg] };
const FUTEX_WAIT = 0n, FUTEX_CMD_MASK = 0x7fn, TIMER_ABSTIME = 1n;

/** The waits this applies to, by x86_64 system call number. select, pselect6
 * and ppoll are not here: they write the time left into their own argument
 * and restart with it (ERESTARTNOHAND), which the kernel does by itself. */
export const WAITS: Record<number, WaitCall> = {
  7: { name: "poll", eintr: false, timeout: ms(2) },
  35: { name: "nanosleep", eintr: false, timeout: ts(0), rem: 1 },
  128: { name: "rt_sigtimedwait", eintr: true, timeout: ts(2) },
  202: {
    name: "futex",
    eintr: false,
    // FUTEX_WAIT's timeout is relative; FUTEX_WAIT_BITSET's is a deadline.
    timeout: (a) => (a[1] & FUTEX_CMD_MASK) === FUTEX_WAIT ? ts(3)(a) : { kind: "none" },
  },
  230: {
    name: "clock_nanosleep",
    eintr: false,
    timeout: (a) => (a[1] & TIMER_ABSTIME) ? { kind: "none" } : ts(2)(a),
    rem: 3,
  },
  232: { name: "epoll_wait", eintr: true, timeout: ms(3) },
  281: { name: "epoll_pwait", eintr: true, timeout: ms(3) },
  441: { name: "epoll_pwait2", eintr: true, timeout: ts(3) },
};

/** Calls that write the time they had left back into their own timeout
 * argument when interrupted, and restart with it (ERESTARTNOHAND): a
 * timeval (select) or timespec (pselect6, ppoll). Restored, that is exact;
 * a tree let go by the dump gets the time it spent frozen taken off too. */
export const WRITE_BACK: Record<number, { arg: number; micro: boolean }> = {
  23: { arg: 4, micro: true },
  270: { arg: 4, micro: false },
  271: { arg: 2, micro: false },
};

/** rdi, rsi, rdx, r10, r8, r9 (REG indices, spelled out: regs.ts imports
 * this module): the system call arguments. */
export const ARG_REGS = [14, 13, 12, 7, 9, 8];

export function callArgs(regs: Uint8Array): bigint[] {
  // Image bytes may sit at any offset: a copy is aligned.
  const v = regsView(regs.byteOffset % 8 ? new Uint8Array(regs) : regs);
  return ARG_REGS.map((r) => v[r]);
}

const ERESTARTNOHAND = -514n;
const INT32_MAX = 0x7fffffffn;

/** Registers (and memory words to write first) that make the thread enter
 * call `nr` again with `remainingNs` left (-1: arguments as they were). A
 * timespec argument is replaced by one written below the thread's stack
 * pointer, past the red zone: memory no program state lives in (a signal
 * frame would go there), and the program's own timespec is left as it was. */
export function reenterRegs(
  dumped: Uint8Array,
  nr: bigint,
  remainingNs: bigint,
): { regs: Uint8Array<ArrayBuffer>; pokes: [bigint, bigint][] } {
  const regs = new Uint8Array(dumped);
  const v = regsView(regs);
  v[REG.orig_rax] = BigInt.asUintN(64, nr);
  v[REG.rax] = BigInt.asUintN(64, ERESTARTNOHAND);
  const pokes: [bigint, bigint][] = [];
  const call = WAITS[Number(nr)];
  if (!call || remainingNs < 0n) return { regs, pokes };
  const t = call.timeout(callArgs(regs));
  if (t.kind === "ms") {
    // Rounded up: never sooner than the kernel would have returned.
    const left = (remainingNs + 999_999n) / 1_000_000n;
    v[ARG_REGS[t.arg]] = left > INT32_MAX ? INT32_MAX : left;
  } else if (t.kind === "ts") {
    const at = (v[REG.rsp] - 256n) & ~15n;
    pokes.push([at, remainingNs / 1_000_000_000n], [at + 8n, remainingNs % 1_000_000_000n]);
    v[ARG_REGS[t.arg]] = at;
  }
  return { regs, pokes };
}

/** The timespecs the restorer writes for the waits it enters again (it does
 * the writing, so a stack page still to come with --lazy-pages is served
 * like any other). One that would not land in writable memory of the task
 * (a thread at the very end of its stack) is not used: that wait gets its
 * whole timeout (the thread's state is changed to say so, for finish()). */
export function waitOps(
  core: TaskCore,
  vmas: { start: bigint; end: bigint; prot: number }[],
): PlanOp[] {
  const ops: PlanOp[] = [];
  for (const th of core.threads) {
    const sc = th.syscall;
    if (sc?.action !== "reenter" || sc.remainingNs < 0n) continue;
    const { pokes } = reenterRegs(th.regs, sc.nr, sc.remainingNs);
    if (!pokes.length) continue;
    const at = pokes[0][0];
    const PROT_WRITE = 2;
    if (!vmas.some((v) => v.start <= at && at + 16n <= v.end && (v.prot & PROT_WRITE))) {
      sc.remainingNs = -1n;
      sc.remainingFrom = "unknown";
      continue;
    }
    ops.push({
      op: OP.STORE,
      phase: PHASE.LAST,
      a: [at, pokes.length, ...pokes.map((p) => p[1])],
      what: `placing what the wait of thread ${th.tid} has left`,
    });
  }
  return ops;
}
