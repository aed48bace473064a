// Dumping a tree (killed by the dump) and restoring it detached, for tests
// that then check what the restored tasks do.
import { assertEquals } from "../../src/deps/std_assert.ts";
import { runCkpt } from "./ckpt.ts";
import { gone, readText, until } from "./proc.ts";

export interface TaskStat {
  state: string;
  ppid: number;
  pgid: number;
  sid: number;
  comm: string;
}

export function taskStat(pid: number): TaskStat {
  const s = readText(`/proc/${pid}/stat`);
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return {
    state: f[0],
    ppid: +f[1],
    pgid: +f[2],
    sid: +f[3],
    comm: s.slice(s.indexOf("(") + 1, s.lastIndexOf(")")),
  };
}

export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      out.push(
        ...readText(`/proc/${pid}/task/${t.name}/children`).trim().split(/\s+/).filter(Boolean)
          .map(Number),
      );
    }
  } catch { /* gone */ }
  return out.sort((a, b) => a - b);
}

/** Dumps the tree of root (killing it) and waits until all its pids are
 * free. With `--json` in extra, returns what the dump says of itself. */
export async function dumpTree(
  root: number,
  status: Promise<Deno.CommandStatus>,
  images: string,
  pids: number[],
  extra: string[] = [],
): Promise<{ frozenMs: number }> {
  const r = await runCkpt(["dump", "-t", String(root), "-D", images, ...extra]);
  assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
  await status;
  await until("all pids free", () => [root, ...pids].every(gone));
  return extra.includes("--json") ? JSON.parse(r.stdout) : { frozenMs: 0 };
}

export async function restoreTree(images: string, extra: string[] = []): Promise<void> {
  const r = await runCkpt(["restore", "-D", images, "-d", ...extra]);
  assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
}

/** Kills every pid first, then waits for all of them to go: a child killed
 * while its parent lives stays a zombie until that parent dies too. */
export async function killAll(pids: number[]): Promise<void> {
  for (const pid of pids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
  await until("pids to vanish", () => pids.every(gone), 10_000).catch(() => {});
}
