// Runs the real ./ckpt launcher the way a user would.
export const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
export const CKPT = `${ROOT}/ckpt`;
export const WORKLOADS = `${ROOT}/zig-out/workloads`;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `timeoutMs`: ckpt is killed after that long (a hang then fails the test
 * rather than blocking it forever). */
export async function runCkpt(
  args: string[],
  opts: { stdin?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  const cmd = new Deno.Command(CKPT, {
    args,
    env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1" },
    signal: opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const child = cmd.spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Starts ./ckpt as a child that keeps running (e.g. a restore without -d,
 * which stays the restored tree's parent); stderr is kept for messages. */
export function spawnCkpt(args: string[]): Deno.ChildProcess {
  return new Deno.Command(CKPT, {
    args,
    env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

/** PATH without any directory that holds a `deno` (as on a machine with
 * only Node/npm): what the launcher sees when Deno is not installed. */
export function pathWithoutDeno(): string {
  return (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":").filter((d) => {
    try {
      Deno.statSync(`${d}/deno`);
      return false;
    } catch {
      return d !== "";
    }
  }).join(":");
}
