// Freezing a task with PTRACE_SEIZE + PTRACE_INTERRUPT, and letting it go
// again exactly as it was (detach) if anything fails.
import { sleepSync } from "../util/sleep.ts";
import { DumpError } from "../errors.ts";
import { NativeError, ptrace, wait, WALL, WNOHANG } from "../native/mod.ts";
import { listChildren, listThreads, processExists } from "../proc/read.ts";
import { readStat } from "../proc/status.ts";
import { log } from "../util/log.ts";

/** How long a killed tree may take to die. */
const KILL_WAIT_MS = 10_000;

export class Frozen {
  private readonly seized: number[] = [];

  /** Seizes and interrupts every tid first, then waits for each stop, so
   * the threads of a task stop together rather than one after another. */
  seize(...tids: number[]): void {
    this.seizeThreads(0, tids);
  }

  /** seize() for threads of task `pid`: one other than the leader that exits
   * meanwhile (a short-lived worker; glibc starts one per expiry of a
   * SIGEV_THREAD timer) is no longer part of the task and is left out.
   * Returns the tids frozen. */
  seizeThreads(pid: number, tids: number[]): number[] {
    const mayVanish = (tid: number) => pid !== 0 && tid !== pid;
    const gone = new Set<number>();
    for (const tid of tids) {
      try {
        ptrace.seize(tid);
      } catch (err) {
        if (err instanceof NativeError && err.errno === 3 && mayVanish(tid)) {
          gone.add(tid);
          continue;
        }
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
      try {
        ptrace.interrupt(tid);
      } catch (err) {
        if (!(err instanceof NativeError && err.errno === 3 && mayVanish(tid))) throw err;
        this.seized.pop();
        gone.add(tid);
      }
    }
    for (const tid of tids) {
      if (gone.has(tid)) continue;
      const st = wait(tid, WALL);
      if (!st || !st.stopped) {
        this.seized.splice(this.seized.indexOf(tid), 1);
        if (mayVanish(tid)) {
          gone.add(tid);
          continue;
        }
        throw new DumpError(`pid ${tid} exited while it was being frozen`);
      }
      log.trace(`froze ${tid} (stop signal ${st.stopSig}, event ${st.event})`);
    }
    if (gone.size) log.debug(`pid ${pid}: thread(s) ${[...gone]} exited while being frozen`);
    return tids.filter((t) => !gone.has(t));
  }

  /** Seizes and interrupts tids held by the cgroup freezer, without waiting:
   * they stop once thawed (awaitStops). A thread gone meanwhile is skipped.
   * Returns the tids seized, and what stopped it early (the caller thaws
   * and collects those first). */
  seizeHeld(tids: number[]): { seized: number[]; error?: Error } {
    const got: number[] = [];
    for (const tid of tids) {
      if (this.seized.includes(tid)) continue;
      try {
        ptrace.seize(tid);
      } catch (err) {
        if (err instanceof NativeError && err.errno === 3) continue;
        // Exiting since the cgroup was listed: ptrace refuses a zombie.
        if (err instanceof NativeError && err.errno === 1 && isZombie(tid)) continue;
        const error = err instanceof NativeError && err.errno === 1
          ? new DumpError(
            `cannot freeze pid ${tid}: ptrace was refused (already traced by a debugger, or no permission)`,
          )
          : err as Error;
        return { seized: got, error };
      }
      this.seized.push(tid);
      got.push(tid);
      try {
        ptrace.interrupt(tid);
      } catch (err) {
        if (!(err instanceof NativeError && err.errno === 3)) {
          return { seized: got, error: err as Error };
        }
      }
    }
    return { seized: got };
  }

  /** Waits (up to timeoutMs) for the stops of tids seizeHeld took; those
   * that exited are dropped. */
  awaitStops(tids: number[], timeoutMs = 10_000): void {
    const end = performance.now() + timeoutMs;
    const left = new Set(tids);
    for (let i = 0; left.size; i++) {
      for (const tid of [...left]) {
        const st = wait(tid, WALL | WNOHANG);
        if (!st) continue;
        left.delete(tid);
        if (!st.stopped) this.seized.splice(this.seized.indexOf(tid), 1);
      }
      if (!left.size) break;
      if (performance.now() > end) {
        throw new DumpError(
          `pid ${[...left][0]} did not stop after its cgroup was thawed (is it in a cgroup ` +
            `frozen on its own?); nothing was dumped`,
        );
      }
      sleepSync(i < 100 ? 0.05 : 1);
    }
  }

  /** Lets go every seized thread not in keep (threads of the freezer cgroup
   * outside the tree). */
  releaseExcept(keep: Set<number>): void {
    for (const tid of this.seized.filter((t) => !keep.has(t))) {
      this.seized.splice(this.seized.indexOf(tid), 1);
      try {
        ptrace.detach(tid, 0);
      } catch { /* gone */ }
    }
  }

  has(tid: number): boolean {
    return this.seized.includes(tid);
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
  kill(): number[] {
    for (const tid of this.seized) ptrace.killTask(tid);
    // A thread group leader is reported only after its other threads, and
    // parents were seized before their children: collect in reverse. Never
    // wait forever: a task the kernel will not kill (a PID namespace's init
    // seen from inside) is let go and named instead.
    const end = performance.now() + KILL_WAIT_MS;
    const survivors: number[] = [];
    for (const tid of this.seized.splice(0).reverse()) {
      for (;;) {
        let st;
        try {
          st = wait(tid, WALL | WNOHANG);
        } catch {
          break; // already reaped
        }
        if (st && (st.exited || st.signaled)) break;
        if (performance.now() > end) {
          survivors.push(tid);
          try {
            ptrace.detach(tid, 0);
          } catch { /* it went after all */ }
          break;
        }
        // A killed task is gone within microseconds: poll finely at first.
        if (!st) sleepSync(performance.now() + KILL_WAIT_MS - end < 20 ? 0.05 : 2);
      }
    }
    return survivors;
  }
}

export interface FrozenTask {
  pid: number;
  /** Leader first. */
  tids: number[];
  zombie: boolean;
}

/** Freezes every thread of every task of the tree below root, scanning again
 * until a whole pass finds nothing new, so a task forked meanwhile is caught.
 * Tasks come parents first. Zombies are not seized (they cannot run). */
export function freezeTree(
  root: number,
  frozen: Frozen,
  /** Called for each task before it is seized (may refuse it). */
  beforeSeize?: (pid: number) => void,
): FrozenTask[] {
  const tasks = new Map<number, FrozenTask>();
  const order: number[] = [root];
  for (let changed = true; changed;) {
    changed = false;
    for (let i = 0; i < order.length; i++) {
      const pid = order[i];
      let t = tasks.get(pid);
      if (!t) {
        t = { pid, tids: [], zombie: isZombie(pid) };
        if (!t.zombie) beforeSeize?.(pid);
        tasks.set(pid, t);
        changed = true;
      }
      if (t.zombie) continue;
      const listed = listThreads(pid);
      // Threads seized already through the cgroup freezer (seizeHeld).
      const held = listed.filter((tid) => frozen.has(tid) && !t!.tids.includes(tid));
      if (held.length) t.tids.push(...held);
      const fresh = listed.filter((tid) => !frozen.has(tid));
      if (fresh.length) {
        t.tids.push(...frozen.seizeThreads(pid, fresh));
        changed = true;
      }
      for (const child of listChildren(pid)) {
        if (child === Deno.pid) {
          throw new DumpError(
            `the tree of pid ${root} contains ckpt itself; dump a tree ckpt is not part of`,
          );
        }
        if (!order.includes(child)) {
          order.push(child);
          changed = true;
        }
      }
    }
  }
  for (const t of tasks.values()) {
    t.tids.sort((a, b) => (a === t.pid ? -1 : b === t.pid ? 1 : a - b));
  }
  return order.map((pid) => tasks.get(pid)!);
}

function isZombie(pid: number): boolean {
  try {
    return readStat(pid).state === "Z";
  } catch {
    return false;
  }
}

/** True when tid is gone or dying: a SIGKILLed tracee takes a moment to
 * become a zombie, so give it up to graceMs before calling it alive. */
export function dead(tid: number, graceMs = 200): boolean {
  const end = performance.now() + graceMs;
  for (;;) {
    try {
      if ("ZX".includes(readStat(tid).state)) return true;
    } catch {
      return true;
    }
    if (performance.now() > end) return false;
    sleepSync(5);
  }
}
