import type { CommandSpec, ParsedOptions } from "../cli/spec.ts";
import { writeStream } from "../images/stream.ts";
import { dump } from "../api/guarded.ts";
import { UsageError } from "../errors.ts";
import { PID_MAX } from "../proc/read.ts";
import { formatBytes, formatMs } from "../util/units.ts";
import { formatDryRun } from "../dump/dry_run.ts";
import { dumpStatsLines, STATS_DUMP } from "../images/criu_stats.ts";
import { ACTION_OPTIONS, actionScripts } from "./actions.ts";
import { parseEmptyNs, parseVethExternals } from "../ns/net/options.ts";
import { CGROUP_OPTIONS, parseCgroupRoots, parseManageMode, propsSpec } from "../cgroup/options.ts";
import type { DumpOptions } from "../dump/dump.ts";

export const dumpCommand: CommandSpec = {
  name: "dump",
  summary: "checkpoint a process tree into an images directory",
  usage: "ckpt dump -t PID -D DIR [OPTIONS]",
  description: `
Freezes the tree rooted at PID, writes its state to DIR (created owner-only)
and then kills it, unless told to leave it running or stopped. A refused or
failed dump leaves the tree running as it was and no usable images behind.`,
  options: [
    { name: "tree", short: "t", kind: "string", arg: "PID", help: "root of the tree to dump" },
    {
      name: "images-dir",
      short: "D",
      kind: "string",
      arg: "DIR",
      help: "where to write the images",
    },
    {
      name: "leave-running",
      short: "R",
      kind: "boolean",
      help: "let the tree run on after the dump",
    },
    {
      name: "leave-stopped",
      short: "s",
      kind: "boolean",
      help: "leave the tree stopped (SIGSTOP)",
    },
    {
      name: "shell-job",
      short: "j",
      kind: "boolean",
      help: "the tree is a job of a shell session (terminal fds, session not its own)",
    },
    {
      name: "ext-unix-sk",
      kind: "list",
      optionalValue: true,
      arg: "ID[,ID…]",
      help: "allow UNIX sockets with peers outside the tree: bare, every one-way DGRAM " +
        "client of a named server; with IDs (socket inodes), those sockets whatever their type",
    },
    {
      name: "external",
      kind: "list",
      arg: "unix[ID]|veth[IF][:OUT[@BR]]|net[INO]:KEY|mnt[MNT]:KEY",
      help: "unix[ID]: allow UNIX socket ID to have its peer outside the tree (restore it " +
        "with --inherit-fd fd[N]:socket:[ID]); veth[IF]: the veth IF of the tree's network " +
        "namespace has its other end outside, made again at restore (named OUT, put in " +
        "bridge BR); net[INO]:KEY: the network namespace INO is the caller's, not saved " +
        "(restore with --inherit-fd fd[N]:KEY); mnt[MNT]:KEY: the mount at MNT (as the tree " +
        "sees it) belongs to the host: save it as KEY (restore binds it from --external " +
        "mnt[KEY]:PATH)",
    },
    {
      name: "empty-ns",
      kind: "list",
      arg: "net",
      help: "save the tree's own network namespace empty: restore makes a new one with only " +
        "lo, for the caller to set up (at setup-namespaces)",
    },
    {
      name: "ext-mount-map",
      short: "M",
      kind: "list",
      arg: "MNT:KEY",
      help: "CRIU's older spelling of --external mnt[MNT]:KEY",
    },
    {
      name: "file-locks",
      kind: "boolean",
      help: "accepted for CRIU compatibility: ckpt always saves file locks (flock, POSIX, OFD) " +
        "and takes them again",
    },
    {
      name: "tcp-established",
      kind: "boolean",
      help: "save live TCP connections (locked with nftables while they are dumped) so " +
        "they carry on after restore (restore needs it too)",
    },
    {
      name: "tcp-close",
      kind: "boolean",
      help: "dump live TCP connections without their state: restored reset (the program " +
        "sees ECONNRESET)",
    },
    {
      name: "skip-in-flight",
      kind: "boolean",
      help: "leave behind TCP connections a listener has not accepted yet (their clients " +
        "see a reset) instead of refusing the dump",
    },
    {
      name: "prev-images-dir",
      kind: "string",
      arg: "DIR",
      help: "a pre-dump of this tree (relative to -D unless absolute): pages not written " +
        "since stay there and are read from it on restore",
    },
    {
      name: "stream",
      kind: "boolean",
      help: "write the images to stdout as one checksummed stream (instead of -D)",
    },
    {
      name: "dry-run",
      kind: "boolean",
      help: "freeze the tree briefly, print what a dump would save and everything that " +
        "blocks it, write nothing and let it run on (exit status 1 when something blocks)",
    },
    ...ACTION_OPTIONS,
    ...CGROUP_OPTIONS,
    {
      name: "cgroup-props",
      kind: "string",
      arg: "SPEC",
      help: 'cgroup properties to save, CRIU\'s format: "CTRL":\n - "strategy": ' +
        '"merge|replace"\n - "properties": ["NAME", …]',
    },
    {
      name: "cgroup-props-file",
      kind: "string",
      arg: "FILE",
      help: "the same, read from FILE",
    },
    {
      name: "cgroup-dump-controller",
      kind: "list",
      arg: "NAME",
      help: "save only these hierarchies' cgroups (repeatable; cgroup2 for v2)",
    },
    {
      name: "freeze-cgroup",
      kind: "string",
      arg: "DIR",
      help: "freeze the tree through this cgroup's freezer (a v1 freezer or v2 cgroup " +
        "directory) while it is seized, so nothing in it forks meanwhile",
    },
    { name: "json", kind: "boolean", help: "print the result as JSON" },
  ],
  async run(opts) {
    const pid = opts.int("tree", { min: 1, max: PID_MAX });
    if (pid === undefined) throw new UsageError("dump: -t/--tree PID is required");
    if (opts.bool("dry-run")) return await dryRun(opts, pid);
    const stream = opts.bool("stream");
    if (opts.bool("tcp-established") && opts.bool("tcp-close")) {
      throw new UsageError("dump: --tcp-established and --tcp-close exclude each other");
    }
    if (stream && opts.has("images-dir")) {
      throw new UsageError("dump: --stream writes to stdout; give no -D/--images-dir with it");
    }
    if (stream && Deno.stdout.isTerminal()) {
      throw new UsageError("dump: --stream would write images to the terminal; pipe it somewhere");
    }
    if (stream && opts.has("prev-images-dir")) {
      throw new UsageError(
        "dump: --stream cannot refer to parent images (--prev-images-dir): the stream must hold every page",
      );
    }
    const staging = stream ? await stagingDir() : undefined;
    const dir = staging ? `${staging}/img` : opts.string("images-dir");
    if (!dir) throw new UsageError("dump: -D/--images-dir DIR is required (or --stream)");
    try {
      return await dumpTo(opts, pid, dir, staging !== undefined);
    } finally {
      if (staging) await Deno.remove(staging, { recursive: true }).catch(() => {});
    }
  },
};

async function dumpTo(
  opts: ParsedOptions,
  pid: number,
  dir: string,
  stream: boolean,
): Promise<number> {
  const r = await dump({
    pid,
    dir,
    leaveRunning: opts.bool("leave-running"),
    leaveStopped: opts.bool("leave-stopped"),
    shellJob: opts.bool("shell-job"),
    extUnixSk: parseExtUnixSkDump(opts.list("ext-unix-sk")),
    external: parseExternal(opts.list("external")),
    emptyNet: parseEmptyNs(opts.list("empty-ns")).net,
    extMountMap: parseMountMap(opts.list("ext-mount-map"), "dump"),
    prevImagesDir: opts.string("prev-images-dir"),
    notify: actionScripts(opts.list("action-script"), dir, stream),
    ...cgroupDumpOptions(opts),
    tcpEstablished: opts.bool("tcp-established"),
    tcpClose: opts.bool("tcp-close"),
    skipInFlight: opts.bool("skip-in-flight"),
  });
  // With --stream stdout carries the images: the summary goes to stderr.
  const say = stream ? console.error : console.log;
  if (opts.bool("display-stats") && r.stats) { for (const l of dumpStatsLines(r.stats)) say(l); }
  if (stream) {
    // The statistics are in the summary; the stream carries the images only.
    try {
      Deno.removeSync(`${dir}/${STATS_DUMP}`);
    } catch { /* not written (a warning said so) */ }
    await writeStream(dir, Deno.stdout.writable);
  }
  if (opts.bool("json")) say(JSON.stringify(r));
  else {
    say(
      `dumped pid ${r.pid}${stream ? " to stdout" : ` to ${r.dir}`}: ${
        formatBytes(r.pagesBytes)
      } of memory in ${formatMs(r.totalMs)} (frozen ${formatMs(r.frozenMs)})`,
    );
  }
  return 0;
}

/** --dry-run: the report on stdout (JSON with --json); exit status 1 when
 * something blocks the dump. */
async function dryRun(opts: ParsedOptions, pid: number): Promise<number> {
  for (const o of ["stream", "leave-stopped", "prev-images-dir"]) {
    if (opts.has(o)) throw new UsageError(`dump: --dry-run takes no --${o}`);
  }
  const r = await dump({
    pid,
    dir: opts.string("images-dir") ?? "",
    dryRun: true,
    shellJob: opts.bool("shell-job"),
    extUnixSk: parseExtUnixSkDump(opts.list("ext-unix-sk")),
    external: parseExternal(opts.list("external")),
    emptyNet: parseEmptyNs(opts.list("empty-ns")).net,
    extMountMap: parseMountMap(opts.list("ext-mount-map"), "dump"),
    ...cgroupDumpOptions(opts),
  });
  const report = r.dryRun!;
  if (opts.bool("json")) {
    console.log(JSON.stringify({ ...report, frozenMs: r.frozenMs, totalMs: r.totalMs }));
  } else console.log(formatDryRun(report, r.frozenMs));
  return report.blockers.length ? 1 : 0;
}

function cgroupDumpOptions(opts: ParsedOptions): Pick<DumpOptions, "cgroups" | "freezeCgroup"> {
  const controllers = opts.list("cgroup-dump-controller");
  return {
    cgroups: {
      mode: parseManageMode(opts.string("manage-cgroups")),
      roots: parseCgroupRoots(opts.list("cgroup-root")),
      props: propsSpec(opts.string("cgroup-props"), opts.string("cgroup-props-file")),
      controllers: controllers.length ? controllers : undefined,
    },
    freezeCgroup: opts.string("freeze-cgroup"),
  };
}

/** A private (0700) directory where --stream stages images. */
export async function stagingDir(): Promise<string> {
  return await Deno.makeTempDir({ dir: Deno.env.get("TMPDIR") ?? "/tmp", prefix: "ckpt-stream-" });
}

/** --ext-unix-sk on dump: bare, or socket inodes separated by commas. */
export function parseExtUnixSkDump(values: string[]): string[] {
  for (const v of values) {
    if (v !== "" && !/^\d+(,\d+)*$/.test(v)) {
      throw new UsageError(`dump: --ext-unix-sk '${v}' is not ID[,ID…] (socket inodes)`);
    }
  }
  return values;
}

/** --external on dump: unix[INO], veth[IF][:OUT[@BR]], net[INO]:KEY or mnt[MOUNTPOINT]:KEY. */
export function parseExternal(values: string[]): string[] {
  for (const v of values) {
    if (v.startsWith("veth[") || /^net\[\d+\]:.+$/.test(v)) continue;
    if (!/^unix\[\d+\]$/.test(v) && !/^mnt\[\/[^\]]*\]:.+$/.test(v)) {
      throw new UsageError(
        `dump: --external '${v}' is none of unix[ID] (a socket inode), veth[IFNAME][:OUTSIDE], ` +
          `net[INODE]:KEY, mnt[MOUNTPOINT]:KEY`,
      );
    }
  }
  parseVethExternals(values);
  return values;
}

/** --ext-mount-map A:B (dump: mountpoint:key; restore: key:path). */
export function parseMountMap(values: string[], cmd: string): string[] {
  for (const v of values) {
    if (!/^[^:]+:.+$/.test(v)) {
      throw new UsageError(
        `${cmd}: --ext-mount-map '${v}' is not ${cmd === "dump" ? "MOUNTPOINT:KEY" : "KEY:PATH"}`,
      );
    }
  }
  return values;
}
