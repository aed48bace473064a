import { CkptError } from "../errors.ts";
import type { CommandSpec } from "../cli/spec.ts";

export const dumpCommand: CommandSpec = {
  name: "dump",
  summary: "dump (not implemented yet)",
  usage: "ckpt dump [OPTIONS]",
  options: [],
  run() {
    return Promise.reject(new CkptError("dump is not implemented yet"));
  },
};
