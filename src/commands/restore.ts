import type { CommandSpec, ParsedOptions } from "../cli/spec.ts";
import { readStream } from "../images/stream.ts";
import { checkStreamTrust } from "../images/trust.ts";
import { callerFds } from "../cli/caller_fds.ts";
import { parseMountMap, stagingDir } from "./dump.ts";
import { restoreExternals } from "../mount/restore.ts";
import { CGROUP_OPTIONS, parseCgroupRoots, parseManageMode } from "../cgroup/options.ts";
import { UsageError } from "../errors.ts";
import { restore } from "../api/guarded.ts";
import { superviseUntilExit } from "../restore/supervise.ts";
import type { FileValidation } from "../files/kind.ts";
import { formatMs } from "../util/units.ts";
import { restoreStatsLines } from "../images/criu_stats.ts";
import { ACTION_OPTIONS, actionScripts } from "./actions.ts";
import {
  parseEmptyNs,
  parseJoinNs,
  parseVethExternals,
  parseVethPairs,
} from "../ns/net/options.ts";

/** --inherit-fd fd[N]:KEY — KEY as /proc shows the file: pipe:[INO],
 * socket:[INO], or a path. */
export function parseInheritFd(
  values: string[],
  given: Set<number> | undefined = callerFds(),
): Map<string, number> {
  const out = new Map<string, number>();
  for (const v of values) {
    const m = /^fd\[(\d+)\]:(.+)$/.exec(v);
    if (!m) {
      throw new UsageError(
        `restore: --inherit-fd '${v}' is not fd[N]:RESOURCE (e.g. fd[3]:pipe:[12345])`,
      );
    }
    const n = Number(m[1]);
    if (!Number.isSafeInteger(n) || n > MAX_FD) {
      throw new UsageError(`restore: --inherit-fd '${v}': fd ${m[1]} is out of range`);
    }
    if (!given) {
      throw new UsageError(
        `restore: --inherit-fd needs ckpt started through its launcher (./ckpt), which ` +
          `records the fds its caller passed`,
      );
    }
    if (!given.has(n)) {
      throw new UsageError(
        `restore: --inherit-fd '${v}': fd ${n} was not passed to ckpt by its caller ` +
          `(open it in the command that runs ckpt, e.g. '${n}<FILE' or '${n}<&FD')`,
      );
    }
    if (out.has(m[2])) throw new UsageError(`restore: --inherit-fd: ${m[2]} is given twice`);
    out.set(m[2], n);
  }
  return out;
}

/** Above any fd a process can have (fs.nr_open is at most 2^30). */
const MAX_FD = 1 << 30;

/** --ext-unix-sk on restore: bare, ID[,ID…], ID=PATH or ID=disconnected. */
function checkExtUnixSk(values: string[]): string[] {
  for (const v of values) {
    if (v !== "" && !/^\d+(,\d+)*$/.test(v) && !/^\d+=.+$/.test(v)) {
      throw new UsageError(
        `restore: --ext-unix-sk '${v}' is not ID[,ID…], ID=PATH or ID=disconnected`,
      );
    }
  }
  return values;
}

function missingMode(v: string | undefined): "fail" | "disconnect" {
  if (v === undefined || v === "fail") return "fail";
  if (v === "disconnect") return "disconnect";
  throw new UsageError(`restore: --ext-unix-sk-missing must be fail or disconnect, not '${v}'`);
}

export const restoreCommand: CommandSpec = {
  name: "restore",
  summary: "restore a process tree from an images directory",
  usage: "ckpt restore -D DIR [OPTIONS]",
  description: `
Recreates the dumped tree with the same PIDs. Without -d ckpt stays its
parent, forwards SIGINT/SIGTERM to it and exits with its exit status. A failed
restore kills everything it started and names the stage that failed.`,
  options: [
    { name: "images-dir", short: "D", kind: "string", arg: "DIR", help: "the images to restore" },
    {
      name: "restore-detached",
      short: "d",
      kind: "boolean",
      help: "return once the tree runs, instead of waiting for it",
    },
    {
      name: "restore-sibling",
      short: "S",
      kind: "boolean",
      help: "make the restored root a child of ckpt's parent, not of ckpt (with -d)",
    },
    {
      name: "shell-job",
      short: "j",
      kind: "boolean",
      help: "restore a shell job into this terminal",
    },
    {
      name: "file-validation",
      kind: "string",
      arg: "filesize|none",
      help: "check that files are unchanged since the dump (default filesize)",
    },
    {
      name: "inherit-fd",
      kind: "list",
      arg: "fd[N]:RES",
      help: "use ckpt's fd N for RES (pipe:[INO], socket:[INO] or a path)",
    },
    {
      name: "ext-unix-sk",
      kind: "list",
      optionalValue: true,
      arg: "ID[=PATH]",
      help: "reconnect UNIX sockets whose peer was outside: bare, every one-way DGRAM " +
        "client to its server's path; ID to its dump-time path, ID=PATH to PATH, " +
        "ID=disconnected without a peer",
    },
    {
      name: "ext-unix-sk-missing",
      kind: "string",
      arg: "fail|disconnect",
      help: "when an outside peer is missing: fail (default) or restore the socket " +
        "disconnected",
    },
    {
      name: "tcp-established",
      kind: "boolean",
      help:
        "accepted for CRIU compatibility: live TCP connections a dump --tcp-established saved are always rebuilt",
    },
    {
      name: "tcp-close",
      kind: "boolean",
      help:
        "accepted for CRIU compatibility: connections a dump --tcp-close saved always come back reset",
    },
    {
      name: "trust-images",
      kind: "boolean",
      help: "restore images not owned by you or writable by others",
    },
    {
      name: "stream",
      kind: "boolean",
      help: "read the images from stdin, as written by dump --stream (instead of -D)",
    },
    {
      name: "lazy-pages",
      kind: "boolean",
      help: "let the tree run before its memory is in and copy it in on first touch " +
        "(userfaultfd), the rest in the background; with -d, return once every page is in",
    },
    {
      name: "file-locks",
      kind: "boolean",
      help: "accepted for CRIU compatibility: ckpt always saves file locks (flock, POSIX, OFD) " +
        "and takes them again",
    },
    {
      name: "pidfile",
      kind: "string",
      arg: "FILE",
      help: "write the restored root's pid to FILE once it runs",
    },
    {
      name: "root",
      short: "r",
      kind: "string",
      arg: "DIR",
      help: "the root filesystem of a tree that had a mount namespace of its own (its other " +
        "mounts are made again below it)",
    },
    {
      name: "ext-mount-map",
      short: "M",
      kind: "list",
      arg: "KEY:PATH",
      help: "CRIU's older spelling of --external mnt[KEY]:PATH",
    },
    {
      name: "time-ns",
      kind: "boolean",
      help: "restore into a new time namespace where CLOCK_MONOTONIC and CLOCK_BOOTTIME go " +
        "on from their values at dump (always done for a tree that had its own)",
    },
    {
      name: "external",
      kind: "list",
      arg: "veth[IF]:OUT[@BR]|mnt[KEY]:PATH",
      help: "veth[IF]:OUT[@BR]: make the veth IF of the tree's network namespace with its " +
        "outside end named OUT (default: its name at dump), put into bridge BR; " +
        "mnt[KEY]:PATH: the host path PATH of the mount the dump named external as KEY " +
        "(--external mnt[MOUNTPOINT]:KEY at dump)",
    },
    {
      name: "veth-pair",
      kind: "list",
      arg: "IN=OUT[@BR]",
      help: "CRIU's older spelling of --external veth[IN]:OUT[@BR]",
    },
    {
      name: "empty-ns",
      kind: "list",
      arg: "net",
      help: "make the tree's own network namespace with only lo (up), for the caller to set " +
        "up at setup-namespaces",
    },
    {
      name: "join-ns",
      kind: "list",
      arg: "net:PATH|PID",
      help: "restore into an existing network namespace (a file such as /run/netns/x, or a " +
        "process's) instead of a new one",
    },
    ...ACTION_OPTIONS,
    ...CGROUP_OPTIONS,
    { name: "json", kind: "boolean", help: "print the result as JSON" },
  ],
  async run(opts) {
    const stream = opts.bool("stream");
    if (stream && opts.has("images-dir")) {
      throw new UsageError("restore: --stream reads stdin; give no -D/--images-dir with it");
    }
    if (!stream) return await restoreFrom(opts, opts.string("images-dir"));
    // The staged images go as soon as the tree is restored: its memory is
    // copied in, or with --lazy-pages served from an fd of its own.
    if (!opts.bool("trust-images")) checkStreamTrust();
    const staging = await stagingDir();
    const cleanup = () => Deno.remove(staging, { recursive: true }).catch(() => {});
    try {
      await Deno.mkdir(`${staging}/img`, { mode: 0o700 });
      await readStream(Deno.stdin.readable, `${staging}/img`);
      return await restoreFrom(opts, `${staging}/img`, cleanup);
    } finally {
      await cleanup();
    }
  },
};

/** --external mnt[KEY]:PATH and --ext-mount-map KEY:PATH as key → path. */
function restoreMountMap(external: string[], map: string[]): Map<string, string> {
  for (const v of external) {
    if (v.startsWith("veth[")) continue;
    if (!/^mnt\[[^\]]+\]:.+$/.test(v)) {
      throw new UsageError(
        `restore: --external '${v}' is not veth[IFNAME]:OUTSIDE[@BRIDGE] or mnt[KEY]:PATH`,
      );
    }
  }
  return restoreExternals(
    external.filter((v) => v.startsWith("mnt[")),
    parseMountMap(map, "restore"),
  );
}

/** --restore-sibling: ckpt cannot wait for a tree that is not its child. */
function siblingOf(opts: ParsedOptions): boolean {
  const sibling = opts.bool("restore-sibling");
  if (sibling && !opts.bool("restore-detached")) {
    throw new UsageError(
      "restore: --restore-sibling needs -d: the root is then its caller's child, not ckpt's",
    );
  }
  return sibling;
}

/** `done` runs once the tree is restored, before ckpt waits on it. */
async function restoreFrom(
  opts: ParsedOptions,
  dir: string | undefined,
  done?: () => Promise<void>,
): Promise<number> {
  if (!dir) throw new UsageError("restore: -D/--images-dir DIR is required (or --stream)");
  const fv = opts.string("file-validation") ?? "filesize";
  if (fv !== "filesize" && fv !== "none") {
    throw new UsageError(`restore: --file-validation must be filesize or none, not '${fv}'`);
  }
  const r = await restore({
    dir,
    detach: opts.bool("restore-detached"),
    sibling: siblingOf(opts),
    shellJob: opts.bool("shell-job"),
    fileValidation: fv as FileValidation,
    inherit: parseInheritFd(opts.list("inherit-fd")),
    extUnixSk: checkExtUnixSk(opts.list("ext-unix-sk")),
    extUnixSkMissing: missingMode(opts.string("ext-unix-sk-missing")),
    trustImages: opts.bool("trust-images"),
    lazyPages: opts.bool("lazy-pages"),
    notify: actionScripts(opts.list("action-script"), dir),
    timeNs: opts.bool("time-ns"),
    ...netOptions(opts),
    root: opts.string("root"),
    externalMounts: restoreMountMap(opts.list("external"), opts.list("ext-mount-map")),
    cgroups: {
      mode: parseManageMode(opts.string("manage-cgroups")),
      roots: parseCgroupRoots(opts.list("cgroup-root")),
    },
    tcpEstablished: opts.bool("tcp-established"),
    tcpClose: opts.bool("tcp-close"),
  });
  const pidfile = opts.string("pidfile");
  if (pidfile) Deno.writeTextFileSync(pidfile, `${r.pid}\n`);
  if (opts.bool("display-stats")) { for (const l of restoreStatsLines(r.stats)) console.log(l); }
  await done?.();
  const { loaded, ...result } = r;
  if (opts.bool("json")) console.log(JSON.stringify(result));
  else if (opts.bool("restore-detached")) {
    const first = opts.bool("lazy-pages")
      ? ` (running after ${formatMs(r.firstInstructionMs)})`
      : "";
    console.log(`restored pid ${r.pid} in ${formatMs(r.ms)}${first}`);
  }
  if (opts.bool("restore-detached")) return 0;
  // Pages still arriving are served while ckpt waits; a page that cannot be
  // served kills the tree and is reported instead of its exit status.
  const [code] = await Promise.all([superviseUntilExit(r.pid), loaded]);
  return code;
}

/** --external veth[…], --veth-pair, --empty-ns, --join-ns. */
function netOptions(opts: ParsedOptions) {
  const veths = new Map([
    ...parseVethExternals(opts.list("external").filter((v) => v.startsWith("veth["))),
    ...parseVethPairs(opts.list("veth-pair")),
  ]);
  return {
    veths,
    emptyNet: parseEmptyNs(opts.list("empty-ns")).net,
    joinNet: parseJoinNs(opts.list("join-ns")).net,
  };
}
