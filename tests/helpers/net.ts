// Helpers for the network socket tests: the nftables tables ckpt leaves,
// a tree's tasks, files the workloads write, and outside peers.
import { ROOT } from "./ckpt.ts";
import { readText, until } from "./proc.ts";
import { ensureProgram } from "./packages.ts";

export const NET = `${ROOT}/tests/workloads/net`;
export const PEERS = `${ROOT}/tests/peers`;

/** nftables is part of what runs ckpt with --tcp-established. */
export async function ensureNft(): Promise<void> {
  await ensureProgram("nft", "nftables");
}

/** Names of the inet tables ckpt made for tree `pid` (all when pid is 0). */
export async function ckptTables(pid = 0): Promise<string[]> {
  const out = await new Deno.Command("nft", { args: ["list", "tables"], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).split("\n")
    .map((l) => /^table inet (ckpt-(\d+)-[0-9a-f]+)$/.exec(l.trim()))
    .filter((m): m is RegExpExecArray => m !== null && (pid === 0 || m[2] === String(pid)))
    .map((m) => m[1]);
}

/** Removes what a test left locked (a failed test must not keep a port locked). */
export async function dropTables(pid: number): Promise<void> {
  for (const t of await ckptTables(pid)) {
    await new Deno.Command("nft", { args: ["delete", "table", "inet", t] }).output();
  }
}

export function childrenOf(pid: number): number[] {
  return readText(`/proc/${pid}/task/${pid}/children`).split(/\s+/).filter(Boolean).map(Number);
}

export function signal(pids: number[], sig: Deno.Signal): void {
  for (const p of pids) {
    try {
      Deno.kill(p, sig);
    } catch { /* gone */ }
  }
}

export async function waitFile(path: string, what = path, ms = 10_000): Promise<string> {
  await until(what, () => readText(path) !== "", ms);
  return readText(path);
}

/** "key=value" fields of a status line. */
export function fields(line: string): Record<string, number> {
  return Object.fromEntries(
    line.trim().split(/\s+/).map((kv) => kv.split("=")).filter((p) => p.length === 2)
      .map(([k, v]) => [k, Number(v)]),
  );
}

/** A python3 peer outside the tree, owned by the test. */
export function startPeer(script: string, args: string[]): Deno.ChildProcess {
  return new Deno.Command("python3", {
    args: [`${PEERS}/${script}`, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
}

export async function stopPeer(p: Deno.ChildProcess | undefined): Promise<void> {
  if (!p) return;
  try {
    p.kill("SIGKILL");
  } catch { /* gone */ }
  await p.status;
}

/** The files.img entries of an image directory, as `ckpt show` prints them. */
export async function shownFiles(
  runCkpt: (a: string[]) => Promise<{ code: number; stdout: string; stderr: string }>,
  dir: string,
): Promise<Record<string, unknown>[]> {
  const r = await runCkpt(["show", `${dir}/files.img`, "--compact"]);
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout).payload.files;
}
