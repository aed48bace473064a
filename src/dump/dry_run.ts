// `ckpt dump --dry-run`: what a dump of the tree would save (tasks, their
// fds by kind, memory) and everything that blocks it, from a dump that went
// as far as writing and then let the tree go. Made from what the dump
// collected, so it says exactly what that dump would have done.
import type { FdEntry, PageRun, TaskCore } from "../gen/ckpt/images_pb.ts";
import type { Blocker, FileCollector } from "../files/collect.ts";
import { kindOf } from "../files/registry.ts";
import { PAGE_SIZE } from "../images/format.ts";
import { formatBytes, formatMs } from "../util/units.ts";
import type { FrozenTask } from "./freeze.ts";

export interface DryRunFd {
  fd: number;
  /** The file's entry; fds sharing an open file description share it. */
  fileId: number;
  kind: string;
}

export interface DryRunTask {
  pid: number;
  comm: string;
  threads: number;
  zombie: boolean;
  fds: DryRunFd[];
  memoryBytes: number;
}

export interface DryRunReport {
  pid: number;
  tasks: DryRunTask[];
  /** Open files a dump would save, by kind. */
  files: Record<string, number>;
  memoryBytes: number;
  blockers: Blocker[];
}

interface Live {
  t: FrozenTask;
  core: TaskCore;
  fds: FdEntry[];
  runs: PageRun[];
}

export function dryRunReport(
  pid: number,
  tree: FrozenTask[],
  live: Live[],
  files: FileCollector,
): DryRunReport {
  const nameOf = (id: number) => {
    const f = files.files[id - 1];
    return (f && kindOf(f)?.name) ?? "file";
  };
  const byPid = new Map(live.map((l) => [l.t.pid, l]));
  const tasks = tree.map((t): DryRunTask => {
    const l = byPid.get(t.pid);
    const pages = l?.runs.filter((r) => !r.inParent).reduce((a, r) => a + Number(r.nrPages), 0);
    return {
      pid: t.pid,
      comm: l?.core.comm ?? "",
      threads: t.tids.length,
      zombie: t.zombie,
      fds: (l?.fds ?? []).map((e) => ({ fd: e.fd, fileId: e.fileId, kind: nameOf(e.fileId) })),
      memoryBytes: (pages ?? 0) * PAGE_SIZE,
    };
  });
  const ids = new Set(tasks.flatMap((t) => t.fds.map((f) => f.fileId)));
  const counts: Record<string, number> = {};
  for (const id of ids) counts[nameOf(id)] = (counts[nameOf(id)] ?? 0) + 1;
  return {
    pid,
    tasks,
    files: counts,
    memoryBytes: tasks.reduce((a, t) => a + t.memoryBytes, 0),
    blockers: files.blockers,
  };
}

/** The report for a person: one line per task, the totals, every blocker. */
export function formatDryRun(r: DryRunReport, frozenMs: number): string {
  const lines = [
    `dry run of pid ${r.pid}: frozen ${formatMs(frozenMs)}, nothing written, the tree runs on`,
  ];
  for (const t of r.tasks) {
    if (t.zombie) {
      lines.push(`  pid ${t.pid}: zombie`);
      continue;
    }
    const kinds: Record<string, number> = {};
    for (const f of t.fds) kinds[f.kind] = (kinds[f.kind] ?? 0) + 1;
    const list = Object.entries(kinds).sort().map(([k, n]) => `${k} ${n}`).join(", ");
    lines.push(
      `  pid ${t.pid} (${t.comm}): ${t.threads} thread(s), ${t.fds.length} fd(s)` +
        `${list ? ` (${list})` : ""}, ${formatBytes(t.memoryBytes)} of memory`,
    );
  }
  const nFiles = Object.values(r.files).reduce((a, b) => a + b, 0);
  lines.push(
    `would save ${r.tasks.length} task(s), ${nFiles} open file(s), ` +
      `${formatBytes(r.memoryBytes)} of memory`,
  );
  if (!r.blockers.length) lines.push("nothing blocks the dump");
  else {
    lines.push(`${r.blockers.length} thing(s) block the dump:`);
    for (const b of r.blockers) {
      const at = [b.pid ? `pid ${b.pid}` : "", b.fd !== undefined ? `fd ${b.fd}` : "", b.kind ?? ""]
        .filter(Boolean).join(", ");
      lines.push(`  - [${at}] ${b.message}`);
    }
  }
  return lines.join("\n");
}
