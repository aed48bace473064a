// Small helpers for reading /proc. A vanished process surfaces as NoProcess so
// callers can say which PID went away.
import { CkptError } from "../errors.ts";

export class NoProcess extends CkptError {
  constructor(readonly pid: number) {
    super(`no process with pid ${pid}`);
    this.name = "NoProcess";
  }
}

export function procPath(pid: number | "self", rest: string): string {
  return `/proc/${pid}/${rest}`;
}

export function readProcText(pid: number | "self", rest: string): string {
  try {
    return Deno.readTextFileSync(procPath(pid, rest));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound && pid !== "self") throw new NoProcess(pid);
    throw err;
  }
}

export function readProcBytes(pid: number | "self", rest: string): Uint8Array {
  try {
    return Deno.readFileSync(procPath(pid, rest));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound && pid !== "self") throw new NoProcess(pid);
    throw err;
  }
}

export function processExists(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Threads of a process (tids), sorted, leader first. */
export function listThreads(pid: number): number[] {
  const tids: number[] = [];
  try {
    for (const e of Deno.readDirSync(`/proc/${pid}/task`)) tids.push(Number(e.name));
  } catch {
    throw new NoProcess(pid);
  }
  return tids.sort((a, b) => (a === pid ? -1 : b === pid ? 1 : a - b));
}

/** Direct children of a process, from every thread's children list. */
export function listChildren(pid: number): number[] {
  const out = new Set<number>();
  for (const tid of listThreads(pid)) {
    let text = "";
    try {
      text = Deno.readTextFileSync(`/proc/${pid}/task/${tid}/children`);
    } catch {
      continue;
    }
    for (const w of text.trim().split(/\s+/)) if (w) out.add(Number(w));
  }
  return [...out].sort((a, b) => a - b);
}

/** The kernel's limit on pid numbers (PID_MAX_LIMIT on 64-bit). */
export const PID_MAX = 4194304;
