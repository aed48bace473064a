// Freezing a task with PTRACE_SEIZE + PTRACE_INTERRUPT, and letting it go
// again exactly as it was (detach) if anything fails.
import { sleepSync } from "../util/sleep.ts";
import { DumpError } from "../errors.ts";
import {
  kill,
  NativeError,
  ptrace,
  PTRACE_O_SUSPEND_SECCOMP,
  sameObject,
  wait,
  WALL,
  WNOHANG,
} from "../native/mod.ts";
import { listChildren, listThreads, processExists } from "../proc/read.ts";
import { readStat, readStatus } from "../proc/status.ts";
import { log } from "../util/log.ts";
import { callArgs, reenterRegs, WAITS, WRITE_BACK } from "../restore/waits.ts";
import { REG, regsView } from "./regs.ts";
import { type TimedWait, timedWaitOf, TimerWatch } from "./waits.ts";

/** A thread interrupted in a timed wait: what its timeout had left, and
 * when (performance.now()). */
export interface MeasuredWait {
  leftNs: bigint;
  at: number;
}

const STOP_TIMEOUT_MS = 10_000;

/** How long a task may share its address space with a child (vfork) before
 * the dump is refused. */
const VFORK_GRACE_MS = 500;

/** How long a killed tree may take to die. */
const KILL_WAIT_MS = 10_000;

export class Frozen {
  private readonly seized: number[] = [];
  /** Options the tracees are seized with: seccomp suspended, so neither an
   * injected call nor a strict-mode task's next one is judged by it. */
  options = PTRACE_O_SUSPEND_SECCOMP;
  /** Timed waits the freeze interrupted, measured (see waits.ts). */
  readonly waits = new Map<number, MeasuredWait>();
  /** When each thread stopped (performance.now()). */
  private readonly stoppedAt = new Map<number, number>();

  /** False when the kernel refused to suspend seccomp for ckpt (it needs
   * CAP_SYS_ADMIN, and a ckpt not itself under seccomp). */
  get suspendsSeccomp(): boolean {
    return this.options !== 0n;
  }

  /** Seizes every tid, then interrupts them together (threads of a task stop
   * together rather than one after another), except those in a timed wait,
   * which are interrupted one at a time so the time they had left is seen. */
  seize(...tids: number[]): void {
    this.seizeThreads(0, tids);
  }

  /** seize() for threads of task `pid`: one other than the leader that exits
   * meanwhile (a short-lived worker; glibc starts one per expiry of a
   * SIGEV_THREAD timer) is no longer part of the task and is left out; with
   * leaderMayVanish so is a whole task that exits meanwhile (a child of a
   * frozen parent: a short-lived `sleep` a shell forked), which the caller
   * then sees a zombie. Returns the tids frozen. */
  seizeThreads(pid: number, tids: number[], leaderMayVanish = false): number[] {
    const mayVanish = (tid: number) => pid !== 0 && (tid !== pid || leaderMayVanish);
    const vanished = (err: unknown, tid: number) =>
      err instanceof NativeError && err.errno === 3 && mayVanish(tid);
    const gone = new Set<number>();
    const live = () => tids.filter((t) => !gone.has(t));
    for (const tid of tids) {
      try {
        this.attach(tid);
      } catch (err) {
        if (vanished(err, tid)) gone.add(tid);
        else if (err instanceof NativeError && err.errno === 3) {
          throw new DumpError(`no process with pid ${tid}`);
        } else throw err;
      }
    }
    const timed = new Map<number, TimedWait>();
    for (const tid of live()) {
      const t = timedWaitOf(tid);
      if (t !== undefined) timed.set(tid, t);
    }
    const interrupt = (tid: number): boolean => {
      try {
        ptrace.interrupt(tid);
        return true;
      } catch (err) {
        if (!vanished(err, tid)) throw err;
        this.seized.splice(this.seized.indexOf(tid), 1);
        gone.add(tid);
        return false;
      }
    };
    const stop = (tid: number) => {
      if (!this.awaitStop(tid, mayVanish(tid))) gone.add(tid);
    };
    for (const tid of live()) if (!timed.has(tid)) interrupt(tid);
    // Stopped before the timed ones are watched: a thread's timer goes only
    // when it stops, and must not seem one of theirs.
    for (const tid of live()) if (!timed.has(tid)) stop(tid);
    const watch = timed.size ? new TimerWatch() : undefined;
    for (const [tid, w] of timed) {
      const left = watch!.interrupt(tid, w, () => {
        if (interrupt(tid)) stop(tid);
      });
      if (left !== undefined && !gone.has(tid)) {
        this.waits.set(tid, { leftNs: left, at: performance.now() });
      }
    }
    if (gone.size) log.debug(`pid ${pid}: thread(s) ${[...gone]} exited while being frozen`);
    return live();
  }

  private attach(tid: number): void {
    try {
      try {
        ptrace.seize(tid, this.options);
      } catch (err) {
        // EPERM/EINVAL for the option alone: go on without it; a task under
        // seccomp is then refused before anything is injected into it.
        if (!(err instanceof NativeError) || (err.errno !== 1 && err.errno !== 22)) throw err;
        if (this.options === 0n) throw err;
        ptrace.seize(tid, 0n);
        log.debug(`seccomp cannot be suspended for ckpt (${err.message})`);
        this.options = 0n;
      }
    } catch (err) {
      // ptrace refuses a task that became a zombie since it was listed.
      if (err instanceof NativeError && err.errno === 1 && isZombie(tid)) {
        throw new NativeError("ptrace seize", 3, `pid ${tid}`);
      }
      if (err instanceof NativeError && err.errno === 1) {
        throw new DumpError(
          `cannot freeze pid ${tid}: ptrace was refused (already traced by a debugger, or no permission)`,
        );
      }
      throw err; // ESRCH: the caller knows whether tid may vanish
    }
    this.seized.push(tid);
  }

  /** Waits for tid's stop; false when it exited and `mayVanish`. A task that
   * cannot stop (blocked in vfork() for a child that has not exec'd, or in
   * an uninterruptible sleep) is given STOP_TIMEOUT_MS and refused rather
   * than waited for forever. */
  private awaitStop(tid: number, mayVanish = false): boolean {
    const end = performance.now() + STOP_TIMEOUT_MS;
    let nap = 0.02, nextLook = performance.now() + VFORK_GRACE_MS, spins = 0;
    for (;;) {
      const st = wait(tid, WALL | WNOHANG);
      if (st) {
        if (!st.stopped) {
          this.seized.splice(this.seized.indexOf(tid), 1);
          if (mayVanish) return false;
          throw new DumpError(`pid ${tid} exited while it was being frozen`);
        }
        log.trace(`froze ${tid} (stop signal ${st.stopSig}, event ${st.event})`);
        this.stoppedAt.set(tid, performance.now());
        return true;
      }
      const now = performance.now();
      if (now > nextLook) {
        refuseSharedMm(tgidOf(tid), false, 0);
        nextLook = now + 100;
      }
      if (now > end) {
        throw new DumpError(
          `pid ${tid} did not stop within ${STOP_TIMEOUT_MS / 1000} s (state ${stateOf(tid)}: ` +
            `an uninterruptible sleep); dump it again once it is out of it`,
        );
      }
      // A task stops within microseconds of the interrupt as a rule: look
      // again at once a while before sleeping between looks.
      if (++spins < 500) continue;
      sleepSync(nap);
      nap = Math.min(nap * 2, 1);
    }
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
    this.releaseTids(this.seized.filter((t) => !keep.has(t)));
  }

  /** Lets go the given seized threads (what is left of a task that exited
   * while being frozen). */
  releaseTids(tids: number[]): void {
    for (const tid of tids) {
      if (!this.seized.includes(tid)) continue;
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

  /** Lets every task go, resumed as before, or stopped with `sig`. A
   * signal given to PTRACE_DETACH from the stop PTRACE_INTERRUPT made is
   * dropped, so `sig` is sent first: queued while the task is traced (not
   * ignored even by a PID namespace's init seen from inside), it stops the
   * task once it is let go. A wait the freeze ended with EINTR is entered
   * again first, with the time it still has (the kernel goes on with the
   * others by itself). */
  release(sig = 0): void {
    for (const tid of this.seized.splice(0).reverse()) {
      try {
        this.resumeWait(tid);
      } catch (err) {
        log.debug(`pid ${tid}: its wait is left as the freeze ended it: ${(err as Error).message}`);
      }
      try {
        if (sig) kill(tid, sig);
        ptrace.detach(tid, 0);
      } catch (err) {
        // A task that died meanwhile (a zombie until reaped) needs no release.
        if (processExists(tid) && !dead(tid)) {
          log.warn(`could not release pid ${tid}: ${(err as Error).message}`);
        }
      }
    }
  }

  private resumeWait(tid: number): void {
    const regs = ptrace.getRegs(tid);
    const v = regsView(regs);
    const nr = BigInt.asIntN(64, v[REG.orig_rax]);
    const ret = BigInt.asIntN(64, v[REG.rax]);
    const wb = WRITE_BACK[Number(nr)];
    if (wb && ret === -514n) return this.shortenWriteBack(tid, regs, wb);
    const call = WAITS[Number(nr)];
    if (!call?.eintr || ret !== -4n) return;
    const m = this.waits.get(tid);
    const left = m ? m.leftNs - BigInt(Math.round((performance.now() - m.at) * 1e6)) : -1n;
    const r = reenterRegs(regs, nr, m ? (left > 0n ? left : 0n) : -1n);
    for (const [addr, word] of r.pokes) ptrace.pokeWord(tid, addr, word);
    ptrace.setRegs(tid, r.regs);
  }

  /** The time left that select, pselect6 or ppoll wrote back, less the
   * time the thread has been stopped since. */
  private shortenWriteBack(tid: number, regs: Uint8Array, wb: { arg: number; micro: boolean }) {
    const addr = callArgs(regs)[wb.arg];
    const at = this.stoppedAt.get(tid);
    if (!addr || at === undefined) return;
    const [sec, frac] = [ptrace.peekWord(tid, addr), ptrace.peekWord(tid, addr + 8n)];
    const unit = wb.micro ? 1000n : 1n;
    const left = BigInt.asIntN(64, sec) * 1_000_000_000n + BigInt.asIntN(64, frac) * unit -
      BigInt(Math.round((performance.now() - at) * 1e6));
    const ns = left > 0n ? left : 0n;
    ptrace.pokeWord(tid, addr, ns / 1_000_000_000n);
    ptrace.pokeWord(tid, addr + 8n, (ns % 1_000_000_000n) / unit);
  }

  /** Kills the frozen tasks (the default end of a dump) and collects their
   * exit notifications, which come to us as their tracer. */
  kill(): number[] {
    for (const tid of this.seized) ptrace.killTask(tid);
    // Collected in whatever order they die: a thread group leader is
    // reported only after its other threads, and the last thread of a PID
    // namespace's init waits for every other task of the namespace (its own
    // threads too) to be reaped by us first. Never forever: a task the
    // kernel will not kill is let go and named.
    const left = new Set(this.seized.splice(0));
    const end = performance.now() + KILL_WAIT_MS;
    while (left.size) {
      let progress = false;
      for (const tid of [...left].reverse()) {
        let st;
        try {
          st = wait(tid, WALL | WNOHANG);
        } catch {
          st = undefined; // reaped already (ECHILD)
        }
        if (st === null || (st && !st.exited && !st.signaled)) continue;
        left.delete(tid);
        progress = true;
      }
      if (!left.size) break;
      if (performance.now() > end) {
        for (const tid of left) {
          try {
            ptrace.detach(tid, 0);
          } catch { /* it went after all */ }
        }
        return [...left];
      }
      // A killed task is gone within microseconds: poll finely at first.
      if (!progress) sleepSync(performance.now() + KILL_WAIT_MS - end < 20 ? 0.05 : 2);
    }
    return [];
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
      // Before seizing it: a parent in vfork() cannot stop until its child
      // execs, and nothing of it could be released meanwhile.
      if (!frozen.has(pid)) refuseSharedMm(pid, pid === root);
      const listed = listThreads(pid);
      // Threads seized already through the cgroup freezer (seizeHeld).
      const held = listed.filter((tid) => frozen.has(tid) && !t!.tids.includes(tid));
      if (held.length) t.tids.push(...held);
      const fresh = listed.filter((tid) => !frozen.has(tid));
      if (fresh.length) {
        const got = frozen.seizeThreads(pid, fresh, pid !== root);
        t.tids.push(...got);
        changed = true;
        if (fresh.includes(pid) && !got.includes(pid)) {
          // It exited while being frozen: its parent, frozen, cannot have
          // reaped it, so it is dumped as the zombie it now is.
          frozen.releaseTids(got);
          t.tids = [];
          t.zombie = isZombie(pid);
          if (!t.zombie) {
            tasks.delete(pid);
            order.splice(i--, 1);
          }
          continue;
        }
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

const KCMP_VM = 1;

/** Refuses a task sharing its address space with a child (a parent blocked
 * in vfork() until the child execs or exits, or a clone(CLONE_VM) child) or,
 * for the root, with its parent (the root is such a child itself). */
function refuseSharedMm(pid: number, withParent = false, graceMs = VFORK_GRACE_MS): void {
  const end = performance.now() + graceMs;
  for (let nap = 0.0005;; nap = Math.min(nap * 2, 0.02)) {
    const shared = sharedMm(pid, withParent);
    if (!shared) return;
    // A vfork() is over within microseconds as a rule (a shell or
    // posix_spawn running a command): refused only if it lasts.
    if (performance.now() > end) {
      const [parent, child] = shared;
      throw new DumpError(
        `pid ${parent} is waiting in vfork() for its child ${child}, which has not called exec ` +
          `or _exit yet (or they share one address space through clone(CLONE_VM)); dump again ` +
          `once pid ${child} has exec'd or exited`,
      );
    }
    sleepSync(nap);
  }
}

/** [parent, child] of pid's that share its address space, if any. */
function sharedMm(pid: number, withParent: boolean): [number, number] | undefined {
  for (const child of safe(() => listChildren(pid), [])) {
    if (safe(() => sameObject(pid, child, KCMP_VM), false)) return [pid, child];
  }
  if (withParent) {
    const ppid = safe(() => Number(readStat(pid).field(4)), 0);
    if (ppid > 0 && safe(() => sameObject(ppid, pid, KCMP_VM), false)) return [ppid, pid];
  }
  return undefined;
}

function safe<T>(fn: () => T, otherwise: T): T {
  try {
    return fn();
  } catch {
    return otherwise;
  }
}

function tgidOf(tid: number): number {
  return safe(() => Number(readStatus(tid).get("Tgid") ?? tid), tid);
}

function stateOf(tid: number): string {
  return safe(() => readStat(tid).state, "?");
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
