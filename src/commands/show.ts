import { show } from "../api/show.ts";
import type { CommandSpec } from "../cli/spec.ts";
import { UsageError } from "../errors.ts";

export const showCommand: CommandSpec = {
  name: "show",
  summary: "print images as JSON (like CRIU's crit show)",
  usage: "ckpt show [OPTIONS] DIR|FILE",
  description: `
For a FILE: its kind, format version and payload. For a DIR: every image, the
inventory first, then each task's, and the memory each task's pagemap holds.
Every image is validated on the way; a damaged one is an error naming it.
Large bytes fields (registers, FPU state, saved data) are shown as size and
CRC32C; page contents are never printed.`,
  options: [
    { name: "compact", kind: "boolean", help: "one line of JSON instead of indented" },
  ],
  async run(opts, positionals) {
    if (positionals.length !== 1) {
      throw new UsageError("show: give exactly one images directory or image file");
    }
    const result = await show(positionals[0]);
    console.log(JSON.stringify(result, null, opts.bool("compact") ? undefined : 2));
    return 0;
  },
};
