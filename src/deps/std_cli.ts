// @ts-types="./std_cli.d.ts"
export { parseArgs } from "@std/cli/parse-args";
export type { Args, ParseOptions } from "./std_cli.d.ts";
