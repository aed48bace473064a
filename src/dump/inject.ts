// Running system calls inside a frozen task, for what only the task itself can
// tell (sigactions, sigaltstack, itimers, tid address, parent-death signal).
// Results land in a scratch page mapped in the task for the purpose and
// unmapped again before its memory is read.
import { ptrace, vmRead } from "../native/mod.ts";
import { errnoText } from "../native/errno.ts";
import { DumpError } from "../errors.ts";

export const SYS = {
  mmap: 9,
  munmap: 11,
  rt_sigaction: 13,
  getitimer: 36,
  sigaltstack: 131,
  prctl: 157,
} as const;

export class Injector {
  private scratchAddr = 0n;

  /** Threads share their leader's address space, so they share its scratch
   * page too (one mmap/munmap per task, not per thread). */
  constructor(readonly pid: number, private readonly leader?: Injector) {}

  call(nr: number, args: (bigint | number)[] = [], what = `syscall ${nr}`): bigint {
    const r = ptrace.injectSyscall(this.pid, nr, args);
    if (r < 0n && r > -4096n) {
      throw new DumpError(`${what} in pid ${this.pid} failed: ${errnoText(Number(-r))}`);
    }
    return r;
  }

  get scratch(): bigint {
    if (this.leader) return this.leader.scratch;
    if (this.scratchAddr === 0n) {
      // PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
      this.scratchAddr = this.call(SYS.mmap, [0, 4096, 3, 0x22, -1, 0], "mmap of a scratch page");
    }
    return this.scratchAddr;
  }

  read(len: number): DataView {
    const b = vmRead(this.leader?.pid ?? this.pid, this.scratch, len);
    return new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  /** Unmaps the scratch page; must run before the task's memory is dumped. */
  release(): void {
    if (this.scratchAddr !== 0n) {
      const addr = this.scratchAddr;
      this.scratchAddr = 0n;
      this.call(SYS.munmap, [addr, 4096], "munmap of the scratch page");
    }
  }
}
