// `ckpt criu ARGS…` (what bin/criu runs): ckpt answering CRIU's command line
// for the runtimes and scripts that call `criu`: `--version` (CRIU's
// "Version: X.Y" first, then what this really is), `check` and
// `check --feature F`, `swrk N`, `service`, and `dump`, `pre-dump`,
// `restore` with CRIU's options turned into ckpt's (spelled the same where
// they mean the same). Options ckpt cannot honour are refused by name, with
// exit status 1, before anything is done.
import type { CommandSpec } from "../cli/spec.ts";
import { CkptError, UsageError } from "../errors.ts";
import { check } from "../api/check.ts";
import { FEATURES, versionText } from "../rpc/compat.ts";

type Dispatch = (argv: string[]) => Promise<number>;

/** How one CRIU option becomes ckpt's: `to` (ckpt's name, or a function of
 * the value), `drop` (a permission ckpt needs nothing for), or `refuse`. */
interface CriuOption {
  short?: string;
  value?: "required" | "optional";
  ops: string[];
  to?: string | ((v: string, ctx: Ctx) => string[]);
  drop?: string;
  refuse?: string;
}

interface Ctx {
  op: string;
  imagesDir?: string;
  workDir?: string;
}

/** A cgroup option of dump (and restore), which pre-dump has no use for. */
function cgDump(ctx: Ctx, name: string, v: string): string[] {
  return ctx.op === "pre-dump" ? [] : [`--${name}`, v];
}

const DUMPS = ["dump", "pre-dump"];
const ALL = ["dump", "pre-dump", "restore"];
const MNT = "mounts and mount namespaces are not supported yet";

/** Relative to the work directory, as CRIU opens its log and pid files. */
const inWork = (v: string, ctx: Ctx) =>
  v.startsWith("/") ? v : `${ctx.workDir ?? ctx.imagesDir ?? "."}/${v}`;

const TABLE: Record<string, CriuOption> = {
  "images-dir": { short: "D", value: "required", ops: ALL, to: "images-dir" },
  "work-dir": { short: "W", value: "required", ops: ALL, to: () => [] },
  "log-file": {
    short: "o",
    value: "required",
    ops: ALL,
    to: (v, ctx) => {
      if (v === "-") return [];
      const path = inWork(v, ctx);
      // The log opens before the dump creates its directory (0700, as it would).
      Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")) || "/", { recursive: true, mode: 0o700 });
      return ["--log-file", path];
    },
  },
  "tree": { short: "t", value: "required", ops: DUMPS, to: "tree" },
  "leave-running": { short: "R", ops: ["dump"], to: "leave-running" },
  "leave-stopped": { short: "s", ops: ["dump"], to: "leave-stopped" },
  "shell-job": { short: "j", ops: ALL, to: "shell-job" },
  "ext-unix-sk": { short: "x", value: "optional", ops: ["dump", "restore"], to: "ext-unix-sk" },
  "external": {
    value: "required",
    ops: ["dump", "restore"],
    to: (v, ctx) => {
      const ok = /^mnt\[[^\]]+\]:.+$/.test(v) || v.startsWith("veth[") ||
        (ctx.op !== "restore" && (/^unix\[\d+\]$/.test(v) || /^net\[\d+\]:.+$/.test(v)));
      if (!ok) {
        throw new UsageError(
          `--external ${v}: only unix[INO] and net[INO]:KEY (dump), veth[IF][:OUT[@BR]] and ` +
            `mnt[KEY]:VAL are supported`,
        );
      }
      return ["--external", v];
    },
  },
  "prev-images-dir": { value: "required", ops: DUMPS, to: "prev-images-dir" },
  "track-mem": { ops: DUMPS, drop: "pre-dumps always track; a dump that kills needs none" },
  "restore-detached": { short: "d", ops: ["restore"], to: "restore-detached" },
  "inherit-fd": { value: "required", ops: ["restore"], to: "inherit-fd" },
  "lazy-pages": { ops: ["restore"], to: "lazy-pages" },
  "pidfile": {
    value: "required",
    ops: ["restore"],
    to: (v, ctx) => ["--pidfile", inWork(v, ctx)],
  },
  "action-script": { value: "required", ops: ALL, to: "action-script" },
  "display-stats": { ops: ALL, to: "display-stats" },
  "file-validation": {
    value: "required",
    ops: ["restore"],
    to: (v) => {
      if (v !== "filesize") {
        throw new UsageError(`--file-validation ${v}: ckpt checks files by size (filesize)`);
      }
      return ["--file-validation", "filesize"];
    },
  },
  // CRIU reads it at restore only.
  "root": {
    short: "r",
    value: "required",
    ops: ALL,
    to: (v, ctx) => ctx.op === "restore" ? ["--root", v] : [],
  },
  "manage-cgroups": {
    value: "optional",
    ops: ALL,
    to: (v, ctx) => ctx.op === "pre-dump" ? [] : [v ? `--manage-cgroups=${v}` : "--manage-cgroups"],
  },
  "cgroup-props": { value: "required", ops: DUMPS, to: (v, ctx) => cgDump(ctx, "cgroup-props", v) },
  "cgroup-props-file": {
    value: "required",
    ops: DUMPS,
    to: (v, ctx) => cgDump(ctx, "cgroup-props-file", v),
  },
  "cgroup-dump-controller": {
    value: "required",
    ops: DUMPS,
    to: (v, ctx) => cgDump(ctx, "cgroup-dump-controller", v),
  },
  "cgroup-yard": {
    value: "required",
    ops: ALL,
    refuse: "ckpt works in the cgroup hierarchies mounted where it runs, not in a yard",
  },
  "evasive-devices": { ops: ["restore"], drop: "devices are reopened by path" },
  "link-remap": { ops: DUMPS, drop: "deleted files are saved with their contents" },
  "force-irmap": { ops: DUMPS, drop: "watched paths are always resolved" },
  "weak-sysctls": { ops: ["restore"], drop: "no sysctls are restored" },
  "skip-file-rwx-check": { ops: ["restore"], drop: "no rwx bits are checked" },
  "tcp-established": { ops: ALL, refuse: "TCP sockets are not supported yet" },
  "tcp-close": { ops: ALL, refuse: "TCP sockets are not supported yet" },
  "file-locks": { short: "l", ops: ["dump", "restore"], to: "file-locks" },
  "ext-mount-map": { short: "M", value: "required", ops: ["dump", "restore"], to: "ext-mount-map" },
  "enable-external-masters": { ops: ALL, refuse: MNT },
  "enable-external-sharing": { ops: ALL, refuse: MNT },
  "freeze-cgroup": { value: "required", ops: DUMPS, to: "freeze-cgroup" },
  "cgroup-root": {
    value: "required",
    ops: ALL,
    to: (v, ctx) => cgDump(ctx, "cgroup-root", v),
  },
  "empty-ns": {
    value: "required",
    ops: ALL,
    to: (v, ctx) => ctx.op === "pre-dump" ? [] : ["--empty-ns", v],
  },
  "join-ns": { short: "J", value: "required", ops: ["restore"], to: "join-ns" },
  "veth-pair": { value: "required", ops: ["restore"], to: "veth-pair" },
  "auto-dedup": { ops: DUMPS, refuse: "ckpt does not punch holes in parent images" },
  "page-server": { ops: DUMPS, refuse: "ckpt has no page server (use dump --stream)" },
  "address": { value: "required", ops: ALL, refuse: "ckpt has no page server" },
  "port": { value: "required", ops: ALL, refuse: "ckpt has no page server" },
  "stream": { ops: ALL, refuse: "CRIU's image streamer is not ckpt's --stream" },
  "restore-sibling": { short: "S", ops: ["restore"], to: "restore-sibling" },
};

const SHORT = new Map(
  Object.entries(TABLE).filter(([, o]) => o.short).map(([k, o]) => [o.short!, k]),
);

/** CRIU's argv for op (getopt_long style) → ckpt's argv. */
export function translate(op: string, argv: string[]): string[] {
  const out: string[] = [op];
  const ctx: Ctx = { op };
  const items: { name: string; value?: string; shown: string }[] = [];
  let verbosity = 0;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (/^-v+$/.test(a)) {
      verbosity += a.length - 1;
      continue;
    }
    const lvl = /^-v(\d)$/.exec(a) ?? /^--verbosity=(\d)$/.exec(a);
    if (lvl) {
      verbosity = Math.max(0, Number(lvl[1]) - 2); // CRIU's levels start at 2 (warnings)
      continue;
    }
    let name: string, value: string | undefined;
    const long = /^--([^=]+)(?:=(.*))?$/.exec(a);
    const short = /^-([A-Za-z])(.*)$/.exec(a);
    if (long) [name, value] = [long[1], long[2]];
    else if (short && SHORT.has(short[1])) {
      name = SHORT.get(short[1])!;
      value = short[2] || undefined;
    } else {
      throw new UsageError(
        `criu ${op}: '${a}' is not an option ckpt knows (see 'ckpt ${op} --help')`,
      );
    }
    const spec = TABLE[name];
    if (!spec) throw new UsageError(`criu ${op}: option --${name} is not supported by ckpt`);
    if (spec.value === "required" && value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new UsageError(`criu ${op}: --${name} needs a value`);
    }
    items.push({ name, value, shown: a });
    if (name === "images-dir") ctx.imagesDir = value;
    if (name === "work-dir") ctx.workDir = value;
  }
  for (const { name, value } of items) {
    const spec = TABLE[name];
    if (!spec.ops.includes(op)) throw new UsageError(`criu ${op}: --${name} is not for ${op}`);
    if (spec.refuse) throw new UsageError(`criu ${op}: --${name}: ${spec.refuse}`);
    if (spec.drop) continue;
    if (typeof spec.to === "function") out.push(...spec.to(value ?? "", ctx));
    else if (spec.value === "optional") out.push(value ? `--${spec.to}=${value}` : `--${spec.to}`);
    else out.push(`--${spec.to}`, ...(value !== undefined ? [value] : []));
  }
  if (verbosity) out.push(`-v${verbosity}`);
  return out;
}

async function criuCheck(argv: string[]): Promise<number> {
  const features: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--feature") features.push(argv[++i] ?? "");
    else if (a.startsWith("--feature=")) features.push(a.slice(10));
    else if (a === "--all" || a === "--extra" || /^-v\d*$/.test(a)) continue;
    else throw new UsageError(`criu check: '${a}' is not an option ckpt knows`);
  }
  if (features.includes("list")) {
    console.log(Object.keys(FEATURES).join(" "));
    return 0;
  }
  if (features.length) {
    let ok = true;
    for (const f of features) {
      const probe = FEATURES[f];
      if (!probe) {
        throw new CkptError(`unknown feature ${f} ('criu check --feature list' lists them)`);
      }
      const has = probe();
      console.log(`${f} is ${has ? "supported" : "not supported"}`);
      ok &&= has;
    }
    return ok ? 0 : 1;
  }
  const report = await check();
  if (!report.ok) {
    const missing = report.probes.filter((p) => p.required && !p.ok);
    throw new CkptError(`missing: ${missing.map((p) => `${p.name} (${p.detail})`).join("; ")}`);
  }
  console.log("Looks good.");
  return 0;
}

export const criuCommand: CommandSpec = {
  name: "criu",
  summary: "answer CRIU's command line (what bin/criu runs for runtimes that call criu)",
  usage:
    "ckpt criu --version | check [--feature F] | swrk FD | service … | dump|pre-dump|restore …",
  description: `
For tools that run 'criu' (runc --criu PATH, podman, crun, scripts): --version
prints CRIU's 'Version: X.Y' line (the CRIU release whose options and RPC ckpt
answers to) and a line saying this is ckpt; check prints 'Looks good.' when
every required kernel feature works; swrk and service speak CRIU's RPC; dump,
pre-dump and restore take CRIU's options, spelled as ckpt's where they mean
the same, and refuse by name those ckpt cannot honour yet.`,
  options: [],
  run() {
    return Promise.resolve(2); // argv is handled raw (see raw)
  },
  async raw(argv: string[], dispatch: Dispatch): Promise<number> {
    const [op, ...rest] = argv;
    switch (op) {
      case "-V":
      case "--version":
        console.log(versionText());
        return 0;
      case undefined:
      case "-h":
      case "--help":
        console.log(
          `Usage: ${this.usage}\n\n${this.summary}\n${this.description}\n\nOptions dump/restore take: ${
            Object.keys(TABLE).filter((k) => !TABLE[k].refuse).map((k) => `--${k}`).join(" ")
          } -v[N]`,
        );
        return op === undefined ? 2 : 0;
      case "check":
        return await criuCheck(rest);
      case "swrk":
        return await dispatch(["swrk", ...rest]);
      case "service":
        if (rest.includes("-d") || rest.includes("--daemon")) {
          throw new UsageError(
            "criu service --daemon: ckpt's service stays in the foreground; start it in the background yourself",
          );
        }
        return await dispatch(["service", ...rest]);
      case "dump":
      case "pre-dump":
      case "restore":
        return await dispatch(translate(op, rest));
      default:
        throw new UsageError(
          `criu ${op}: not a command ckpt answers (it answers --version, check, swrk, service, dump, pre-dump, restore)`,
        );
    }
  },
};
