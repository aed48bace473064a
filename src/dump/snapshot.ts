// Minimal freeze for --leave-running: each frozen task forks a frozen copy of
// itself (copy-on-write, so the copy's memory is the task's memory at the
// freeze), the tree runs on, and the pages are read from the copies. The
// copies are created without an exit signal, so their parents see no SIGCHLD
// and plain wait() never returns them; when done, ckpt kills them and makes
// each parent reap its copy with one injected wait4, leaving nothing behind.
import { ptrace, wait, WALL } from "../native/mod.ts";
import { processExists } from "../proc/read.ts";
import { log } from "../util/log.ts";
import { Frozen } from "./freeze.ts";

const SYS_wait4 = 61;
const __WALL = 0x40000000;

export class Snapshots {
  private readonly copies = new Map<number, number>();
  /** Each copy's pid as its task sees it (its PID namespace's). */
  private readonly inner = new Map<number, number>();

  /** `options`: what the task is traced with, kept around the fork. */
  take(pid: number, options = 0n): void {
    const { copy, inner } = ptrace.snapshotFork(pid, options);
    this.copies.set(pid, copy);
    this.inner.set(copy, inner);
    log.debug(`pid ${pid}: frozen copy is pid ${copy}`);
  }

  /** Where the pages of pid are read from. */
  source(pid: number): number {
    return this.copies.get(pid) ?? pid;
  }

  dispose(): void {
    if (this.copies.size === 0) return;
    for (const copy of this.copies.values()) ptrace.killTask(copy);
    for (const copy of this.copies.values()) {
      try {
        wait(copy, WALL); // its exit, reported to us as its tracer
      } catch { /* already collected */ }
    }
    // The tree runs free meanwhile (kept traced, each signal it got would
    // stop it); its leaders are seized again just for the wait4.
    for (const [pid, copy] of this.copies) {
      if (!processExists(pid)) continue;
      const again = new Frozen();
      try {
        again.seize(pid);
        ptrace.injectSyscall(pid, SYS_wait4, [this.inner.get(copy) ?? copy, 0, __WALL, 0]);
      } catch (err) {
        log.warn(`pid ${pid}: could not reap its frozen copy ${copy}: ${(err as Error).message}`);
      } finally {
        again.release();
      }
    }
    this.copies.clear();
    this.inner.clear();
  }
}
