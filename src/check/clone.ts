// clone3 with set_tid: restore forks every task with its dumped PID this way.
import { ERRNO, NativeError } from "../native/mod.ts";
import { probeClone3SetTid } from "../native/probe.ts";
import { probe, type ProbeResult, type ProbeSpec, yes } from "./types.ts";

const SPEC: ProbeSpec = {
  name: "clone3 set_tid",
  required: true,
  why: "to give every restored task the PID it had",
};

function pidMax(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/sys/kernel/pid_max").trim()) || 32768;
  } catch {
    return 32768;
  }
}

function inUse(pid: number): boolean {
  try {
    // Threads are not listed in /proc but can still be stat'ed by id.
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** A PID nobody holds right now, from the upper half of the range where
 * the kernel's own allocation is least likely to get there first. */
export function unusedPid(): number {
  const max = pidMax();
  const low = Math.max(300, Math.floor(max / 2));
  for (let i = 0; i < 1000; i++) {
    const pid = low + Math.floor(Math.random() * (max - low));
    if (!inUse(pid)) return pid;
  }
  throw new Error(`no unused PID found between ${low} and ${max}`);
}

/** Forks a child as exactly `pid`, or as some unused PID; returns what it got. */
export function cloneWithPid(pid?: number): { asked: number; got: number } {
  for (let attempt = 0;; attempt++) {
    const asked = pid ?? unusedPid();
    try {
      return { asked, got: probeClone3SetTid(asked) };
    } catch (err) {
      // Someone took the PID between looking and forking: pick another.
      const raced = err instanceof NativeError && err.errno === ERRNO.EEXIST;
      if (!raced || pid !== undefined || attempt >= 4) throw err;
    }
  }
}

function hint(err: unknown): string | undefined {
  if (!(err instanceof NativeError)) return undefined;
  if (err.errno === ERRNO.EPERM) {
    return "set_tid needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the PID namespace";
  }
  if (err.errno === ERRNO.ENOSYS) return "the kernel has no clone3 (before 5.3)";
  if (err.errno === ERRNO.EINVAL) return "the kernel has no set_tid (before 5.5)";
  return undefined;
}

export function cloneProbes(): Promise<ProbeResult[]> {
  return Promise.all([probe(SPEC, () => {
    const { asked, got } = cloneWithPid();
    if (got !== asked) throw new Error(`asked for pid ${asked}, the kernel gave ${got}`);
    return yes(`forked a child as pid ${asked} exactly, and reaped it`);
  }, hint)]);
}
