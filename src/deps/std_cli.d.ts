// Types for the parts of npm:deno-std@1.4.0/cli/parse_args.js ckpt uses (the
// package ships JavaScript only).
export interface ParseOptions {
  "--"?: boolean;
  alias?: Record<string, string | string[]>;
  boolean?: string | string[] | boolean;
  default?: Record<string, unknown>;
  stopEarly?: boolean;
  string?: string | string[];
  collect?: string | string[];
  negatable?: string | string[];
  unknown?: (arg: string, key?: string, value?: unknown) => unknown;
}
export interface Args {
  _: Array<string | number>;
  "--"?: string[];
  [key: string]: unknown;
}
export function parseArgs(args: string[], options?: ParseOptions): Args;
