// Real processes holding real sockets for the socket tests: python3 scripts
// that print JSON lines describing what they hold, then wait to be killed.
export const PEERS = new URL("../peers/", import.meta.url).pathname;

export interface Python {
  child: Deno.ChildProcess;
  /** The next JSON line the script (or a process it started) printed. */
  next<T = Record<string, unknown>>(): Promise<T>;
}

export function startPython(script: string, args: string[] = []): Python {
  const child = new Deno.Command("python3", {
    args: [script.startsWith("/") ? script : `${PEERS}${script}`, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  return {
    child,
    async next<T>(): Promise<T> {
      const deadline = Date.now() + 10_000;
      while (!buffered.includes("\n")) {
        if (Date.now() > deadline) throw new Error(`${script}: no output within 10 s`);
        const { value, done } = await reader.read();
        if (done) throw new Error(`${script} exited before printing its sockets`);
        buffered += value;
      }
      const i = buffered.indexOf("\n");
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
      return JSON.parse(line) as T;
    },
  };
}

/** SIGKILLs each pid that still exists; they are the test's own processes. */
export function killAll(pids: (number | undefined)[]): void {
  for (const pid of pids) {
    if (!pid) continue;
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** Kills the script, waits for it and closes its pipe so no resource leaks. */
export async function stopPython(p: Python | undefined, others: (number | undefined)[] = []) {
  if (!p) return;
  killAll([p.child.pid, ...others]);
  await p.child.status;
  await p.child.stdout.cancel().catch(() => {});
}
