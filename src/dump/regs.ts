// struct user_regs_struct as 27 little-endian u64 words, and what a frozen
// task's registers say about the system call it was in.
import { callArgs, WAITS } from "../restore/waits.ts";
export const REG = {
  r15: 0,
  r14: 1,
  r13: 2,
  r12: 3,
  rbp: 4,
  rbx: 5,
  r11: 6,
  r10: 7,
  r9: 8,
  r8: 9,
  rax: 10,
  rcx: 11,
  rdx: 12,
  rsi: 13,
  rdi: 14,
  orig_rax: 15,
  rip: 16,
  cs: 17,
  eflags: 18,
  rsp: 19,
  ss: 20,
  fs_base: 21,
  gs_base: 22,
} as const;

export function regsView(regs: Uint8Array): BigUint64Array {
  return new BigUint64Array(regs.buffer, regs.byteOffset, 27);
}

export function getReg(regs: Uint8Array, r: keyof typeof REG): bigint {
  return regsView(regs)[REG[r]];
}

const ERESTARTSYS = -512n, ERESTARTNOINTR = -513n, ERESTARTNOHAND = -514n;
const ERESTART_RESTARTBLOCK = -516n;
const EINTR = -4n;

export type SyscallAction = "none" | "restart" | "eintr" | "reenter";

export interface SyscallDecision {
  nr: bigint;
  ret: bigint;
  action: SyscallAction;
  /** reenter: the time its timeout had left (-1: none, or a deadline). */
  remainingNs: bigint;
  remainingFrom: "" | "timer" | "written" | "args" | "unknown";
}

/** What the freeze can tell of a wait besides its registers. */
export interface WaitFacts {
  /** The time left on the thread's kernel timer as the freeze cancelled it. */
  measuredNs?: bigint;
  /** Reads a struct timespec of the task (nanosleep's rem), in ns. */
  readTimespec?: (addr: bigint) => bigint | undefined;
}

/** Decides how a task frozen inside a system call resumes. Calls that
 * restart keep their raw registers: ckpt sets them over ptrace and the
 * kernel's own restart logic re-enters the call when the task resumes. A wait
 * the kernel would go on with through restart_syscall() (its restart block is
 * not carried over), or one the freeze itself ended with EINTR, is entered
 * again with the time it had left ("reenter", src/restore/waits.ts). Any
 * other call that would restart through restart_syscall() returns EINTR, as
 * after a signal handler — the regs are changed here. */
export function syscallState(regs: Uint8Array, facts: WaitFacts = {}): SyscallDecision {
  const v = regsView(regs);
  const nr = BigInt.asIntN(64, v[REG.orig_rax]);
  const ret = BigInt.asIntN(64, v[REG.rax]);
  const plain = (action: SyscallAction): SyscallDecision => ({
    nr,
    ret,
    action,
    remainingNs: -1n,
    remainingFrom: "",
  });
  if (nr < 0n) return plain("none");
  if (ret === ERESTARTSYS || ret === ERESTARTNOINTR || ret === ERESTARTNOHAND) {
    return plain("restart");
  }
  const call = WAITS[Number(nr)];
  if (call && (ret === ERESTART_RESTARTBLOCK || (call.eintr && ret === EINTR))) {
    const args = callArgs(regs);
    const t = call.timeout(args);
    const d = plain("reenter");
    if (t.kind === "none") return { ...d, remainingFrom: "args" };
    const written = call.rem !== undefined && args[call.rem] !== 0n && ret === ERESTART_RESTARTBLOCK
      ? facts.readTimespec?.(args[call.rem])
      : undefined;
    if (written !== undefined) return { ...d, remainingNs: written, remainingFrom: "written" };
    if (facts.measuredNs !== undefined) {
      return { ...d, remainingNs: facts.measuredNs, remainingFrom: "timer" };
    }
    return { ...d, remainingFrom: "unknown" };
  }
  if (ret === ERESTART_RESTARTBLOCK) {
    v[REG.rax] = BigInt.asUintN(64, EINTR);
    v[REG.orig_rax] = BigInt.asUintN(64, -1n);
    return plain("eintr");
  }
  return plain("none");
}
