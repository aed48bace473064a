// struct user_regs_struct as 27 little-endian u64 words, and what a frozen
// task's registers say about the system call it was in.
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

export type SyscallAction = "none" | "restart" | "eintr";

/** Decides how a task frozen inside a system call resumes, the way the
 * kernel itself would on signal return. Calls that restart keep their raw
 * registers: ckpt sets them over ptrace and the kernel's own restart logic
 * re-enters the call when the task resumes. A call that would restart through
 * restart_syscall() cannot (its restart block is not carried over), so it
 * returns EINTR, as after a signal handler — the regs are changed here. */
export function syscallState(regs: Uint8Array): { nr: bigint; ret: bigint; action: SyscallAction } {
  const v = regsView(regs);
  const nr = BigInt.asIntN(64, v[REG.orig_rax]);
  const ret = BigInt.asIntN(64, v[REG.rax]);
  if (nr < 0n) return { nr, ret, action: "none" };
  if (ret === ERESTARTSYS || ret === ERESTARTNOINTR || ret === ERESTARTNOHAND) {
    return { nr, ret, action: "restart" };
  }
  if (ret === ERESTART_RESTARTBLOCK) {
    v[REG.rax] = BigInt.asUintN(64, EINTR);
    v[REG.orig_rax] = BigInt.asUintN(64, -1n);
    return { nr, ret, action: "eintr" };
  }
  return { nr, ret, action: "none" };
}
