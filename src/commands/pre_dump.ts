import type { CommandSpec } from "../cli/spec.ts";
import { preDump } from "../api/guarded.ts";
import { UsageError } from "../errors.ts";
import { PID_MAX } from "../proc/read.ts";
import { formatBytes, formatMs } from "../util/units.ts";
import { dumpStatsLines } from "../images/criu_stats.ts";
import { ACTION_OPTIONS, actionScripts } from "./actions.ts";

export const preDumpCommand: CommandSpec = {
  name: "pre-dump",
  summary: "save a running tree's memory ahead of a dump, to shorten its freeze",
  usage: "ckpt pre-dump -t PID -D DIR [--prev-images-dir PREV] [OPTIONS]",
  description: `
Saves the memory of the tree rooted at PID into DIR while it keeps running
(frozen only for milliseconds), and starts tracking which pages it writes.
A later 'ckpt dump --prev-images-dir DIR' then saves only those pages; the
rest are read from DIR on restore, so keep it. Pre-dumps chain: give
--prev-images-dir to save only what changed since the previous one.

Tracking lives in a userfaultfd ckpt leaves open in each task (a high fd
number) until the dump; a task that closes it, execs or is replaced simply
has all its pages saved again.`,
  options: [
    { name: "tree", short: "t", kind: "string", arg: "PID", help: "root of the tree" },
    {
      name: "images-dir",
      short: "D",
      kind: "string",
      arg: "DIR",
      help: "where to write the pre-dump",
    },
    {
      name: "prev-images-dir",
      kind: "string",
      arg: "PREV",
      help: "the previous pre-dump (relative to -D unless absolute)",
    },
    {
      name: "shell-job",
      short: "j",
      kind: "boolean",
      help: "the tree is a job of a shell session (session not its own)",
    },
    ...ACTION_OPTIONS,
    {
      name: "freeze-cgroup",
      kind: "string",
      arg: "DIR",
      help: "freeze the tree through this cgroup's freezer while it is seized (as for dump)",
    },
    { name: "json", kind: "boolean", help: "print the result as JSON" },
  ],
  async run(opts) {
    const pid = opts.int("tree", { min: 1, max: PID_MAX });
    if (pid === undefined) throw new UsageError("pre-dump: -t/--tree PID is required");
    const dir = opts.string("images-dir");
    if (!dir) throw new UsageError("pre-dump: -D/--images-dir DIR is required");
    const r = await preDump({
      pid,
      dir,
      prevImagesDir: opts.string("prev-images-dir"),
      shellJob: opts.bool("shell-job"),
      notify: actionScripts(opts.list("action-script"), dir),
      freezeCgroup: opts.string("freeze-cgroup"),
    });
    if (opts.bool("display-stats")) { for (const l of dumpStatsLines(r.stats)) console.log(l); }
    if (opts.bool("json")) console.log(JSON.stringify(r));
    else {
      console.log(
        `pre-dumped pid ${r.pid} to ${r.dir}: ${formatBytes(r.pagesBytes)} of memory` +
          (r.parentBytes ? ` (${formatBytes(r.parentBytes)} unchanged, left in the parent)` : "") +
          ` in ${formatMs(r.totalMs)} (frozen ${formatMs(r.frozenMs)})`,
      );
    }
    return 0;
  },
};
