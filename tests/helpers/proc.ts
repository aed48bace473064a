// Starting and watching the real processes tests checkpoint.
import { WORKLOADS } from "./ckpt.ts";

export { WORKLOADS };

export interface Started {
  pid: number;
  /** Resolves when the process we started exits (we are its parent). */
  status: Promise<Deno.CommandStatus>;
}

/** Starts argv as a session leader with stdio on /dev/null and no other fds
 * (sessionexec execs in place, so the pid is the program's). */
export function startSession(argv: string[]): Started {
  const child = new Deno.Command(`${WORKLOADS}/sessionexec`, {
    args: argv,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  return { pid: child.pid, status: child.status };
}

/** startSession with stdin a pipe whose write end the test holds (outside
 * the tree the workload leads). */
export function startSessionPiped(argv: string[]): Started & { stdin: Deno.ChildProcess["stdin"] } {
  const child = new Deno.Command(`${WORKLOADS}/sessionexec`, {
    args: argv,
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  return { pid: child.pid, status: child.status, stdin: child.stdin };
}

export function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/\) Z /.test(stat);
  } catch {
    return false;
  }
}

export function gone(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return false;
  } catch {
    return true;
  }
}

export async function until(
  what: string,
  pred: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  pollMs = 20,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, pollMs));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export function readText(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

/** Kills pid (if still there) and waits until its pid is free again. */
export async function killAndForget(pid: number): Promise<void> {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* already gone */ }
  await until(`pid ${pid} to vanish`, () => gone(pid), 10_000).catch(() => {});
}

export async function tempDir(prefix: string): Promise<string> {
  return await Deno.makeTempDir({ prefix: `ckpt-${prefix}-` });
}

export function threadState(pid: number): string {
  const s = readText(`/proc/${pid}/stat`);
  return s.slice(s.lastIndexOf(")") + 2, s.lastIndexOf(")") + 3);
}
