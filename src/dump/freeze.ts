// Freezing a task with PTRACE_SEIZE + PTRACE_INTERRUPT, and letting it go
// again exactly as it was (detach) if anything fails.
import { DumpError } from "../errors.ts";
import { NativeError, ptrace, wait, WALL } from "../native/mod.ts";
import { processExists } from "../proc/read.ts";
import { readStat } from "../proc/status.ts";
import { log } from "../util/log.ts";

export class Frozen {
  private readonly seized: number[] = [];

  seize(tid: number): void {
    try {
      ptrace.seize(tid);
    } catch (err) {
      if (err instanceof NativeError && err.errno === 1) {
        throw new DumpError(
          `cannot freeze pid ${tid}: ptrace was refused (already traced by a debugger, or no permission)`,
        );
      }
      if (err instanceof NativeError && err.errno === 3) {
        throw new DumpError(`no process with pid ${tid}`);
      }
      throw err;
    }
    this.seized.push(tid);
    ptrace.interrupt(tid);
    const st = wait(tid, WALL);
    if (!st || !st.stopped) {
      this.seized.pop();
      throw new DumpError(`pid ${tid} exited while it was being frozen`);
    }
    log.debug(`froze ${tid} (stop signal ${st.stopSig}, event ${st.event})`);
  }

  get tids(): readonly number[] {
    return this.seized;
  }

  /** Lets every task go, resumed as before, or stopped with `sig`. */
  release(sig = 0): void {
    for (const tid of this.seized.splice(0).reverse()) {
      try {
        ptrace.detach(tid, sig);
      } catch (err) {
        // A task that died meanwhile (a zombie until reaped) needs no release.
        if (processExists(tid) && !dead(tid)) {
          log.warn(`could not release pid ${tid}: ${(err as Error).message}`);
        }
      }
    }
  }

  /** Kills the frozen tasks (the default end of a dump) and collects their
   * exit notifications, which come to us as their tracer. */
  kill(): void {
    for (const tid of this.seized) ptrace.killTask(tid);
    for (const tid of this.seized.splice(0)) {
      try {
        wait(tid, WALL);
      } catch { /* already reaped */ }
    }
  }
}

/** True when tid is gone or dying: a SIGKILLed tracee takes a moment to
 * become a zombie, so give it up to 200 ms before calling it alive. */
export function dead(tid: number): boolean {
  const end = performance.now() + 200;
  for (;;) {
    try {
      if ("ZX".includes(readStat(tid).state)) return true;
    } catch {
      return true;
    }
    if (performance.now() > end) return false;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
  }
}
