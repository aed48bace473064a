// Declarative command-line specs: one table per command drives parsing,
// validation (unknown options and bad values are usage errors, exit 2) and
// the --help text, so the three never disagree.
import { type Args, parseArgs } from "../deps/std_cli.ts";
import { UsageError } from "../errors.ts";

export type OptionKind = "boolean" | "string" | "list" | "count";

export interface OptionSpec {
  name: string;
  short?: string;
  kind: OptionKind;
  /** Placeholder for the value in help, e.g. "PID". */
  arg?: string;
  help: string;
  /** For kind "string"/"list": when the option may also appear without a value. */
  optionalValue?: boolean;
}

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  description?: string;
  options: OptionSpec[];
  /** Runs the command; resolves to the process exit status. */
  run(opts: ParsedOptions, positionals: string[]): Promise<number>;
  /** Takes its arguments unparsed instead (the CRIU command line), and may
   * run another command through `dispatch`. */
  raw?(argv: string[], dispatch: (argv: string[]) => Promise<number>): Promise<number>;
}

export const COMMON_OPTIONS: OptionSpec[] = [
  { name: "help", short: "h", kind: "boolean", help: "show this help" },
  {
    name: "verbose",
    short: "v",
    kind: "count",
    help: "more output; repeat (-vv) or give a level (-v4)",
  },
  {
    name: "log-file",
    kind: "string",
    arg: "FILE",
    help: "write the log to FILE instead of stderr",
  },
];

export class ParsedOptions {
  constructor(private readonly args: Args, private readonly specs: OptionSpec[]) {}

  has(name: string): boolean {
    const v = this.args[name];
    return v !== undefined && v !== false && !(Array.isArray(v) && v.length === 0);
  }

  bool(name: string): boolean {
    return this.args[name] === true;
  }

  string(name: string): string | undefined {
    const v = this.args[name];
    if (v === undefined || v === false) return undefined;
    if (Array.isArray(v)) return v.length ? String(v[v.length - 1]) : undefined;
    return v === true ? "" : String(v);
  }

  list(name: string): string[] {
    const v = this.args[name];
    if (v === undefined || v === false) return [];
    return (Array.isArray(v) ? v : [v]).map((x) => x === true ? "" : String(x));
  }

  count(name: string): number {
    const v = this.args[name];
    if (v === undefined || v === false) return 0;
    const items = Array.isArray(v) ? v : [v];
    let n = 0;
    for (const item of items) {
      if (item === true || item === "") n++;
      else if (/^\d+$/.test(String(item))) n = Math.max(n, Number(item));
      else throw new UsageError(`option -${this.short(name)}: '${item}' is not a level`);
    }
    return n;
  }

  /** A required or optional integer option, validated. */
  int(name: string, opts: { min?: number; max?: number } = {}): number | undefined {
    const s = this.string(name);
    if (s === undefined) return undefined;
    if (!/^-?\d+$/.test(s)) throw new UsageError(`option --${name}: '${s}' is not a number`);
    const n = Number(s);
    if (opts.min !== undefined && n < opts.min) {
      throw new UsageError(`option --${name}: ${n} is below ${opts.min}`);
    }
    if (opts.max !== undefined && n > opts.max) {
      throw new UsageError(`option --${name}: ${n} is above ${opts.max}`);
    }
    return n;
  }

  private short(name: string): string {
    return this.specs.find((s) => s.name === name)?.short ?? name;
  }
}

export function parseCommandLine(spec: CommandSpec, argv: string[]): {
  opts: ParsedOptions;
  positionals: string[];
} {
  const all = [...spec.options, ...COMMON_OPTIONS];
  const boolean: string[] = [], string: string[] = [], collect: string[] = [];
  const alias: Record<string, string> = {};
  for (const o of all) {
    if (o.short) alias[o.short] = o.name;
    if (o.kind === "boolean") boolean.push(o.name);
    else if (o.kind === "count") collect.push(o.name);
    else {
      string.push(o.name);
      if (o.kind === "list") collect.push(o.name);
    }
  }
  // "--ext-unix-sk" alone and "--ext-unix-sk=ID" are both meaningful: an
  // optional-value option given bare must not swallow the next word.
  const optionalValue = new Set(all.filter((o) => o.optionalValue).map((o) => o.name));
  const fixed: string[] = [];
  for (const a of argv) {
    const m = /^--([^=]+)$/.exec(a);
    fixed.push(m && optionalValue.has(m[1]) ? `--${m[1]}=` : a);
  }
  const known = new Set([...all.map((o) => o.name), ...Object.keys(alias)]);
  const args = parseArgs(fixed, {
    boolean,
    string,
    collect,
    alias,
    "--": true,
    unknown: (arg: string, key?: string) => {
      if (key !== undefined && !known.has(key)) {
        throw new UsageError(
          `${spec.name}: unknown option '${arg}' (see 'ckpt ${spec.name} --help')`,
        );
      }
      return true;
    },
  });
  for (const o of all) {
    if (o.kind !== "string" || o.optionalValue) continue;
    const v = args[o.name];
    if (v === "" && argv.some((a) => a === `--${o.name}` || a === `-${o.short}`)) {
      throw new UsageError(`${spec.name}: option --${o.name} needs a value (${o.arg ?? "VALUE"})`);
    }
    if (Array.isArray(v)) args[o.name] = v[v.length - 1];
  }
  const positionals = [...args._.map(String), ...(args["--"] ?? [])];
  return { opts: new ParsedOptions(args, all), positionals };
}

export function helpText(spec: CommandSpec): string {
  const lines = [`Usage: ${spec.usage}`, "", spec.summary];
  if (spec.description) lines.push("", spec.description.trim());
  lines.push("", "Options:");
  const all = [...spec.options, ...COMMON_OPTIONS];
  const left = all.map((o) => {
    const names = [o.short ? `-${o.short}` : "", `--${o.name}`].filter(Boolean).join(", ");
    const arg = o.arg ? (o.optionalValue ? `[=${o.arg}]` : ` ${o.arg}`) : "";
    return `  ${names}${arg}`;
  });
  const width = Math.min(36, Math.max(...left.map((l) => l.length)) + 2);
  all.forEach((o, i) => {
    const l = left[i];
    lines.push(
      l.length >= width ? `${l}\n${" ".repeat(width)}${o.help}` : l.padEnd(width) + o.help,
    );
  });
  return lines.join("\n");
}
