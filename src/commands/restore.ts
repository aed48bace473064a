import { CkptError } from "../errors.ts";
import type { CommandSpec } from "../cli/spec.ts";

export const restoreCommand: CommandSpec = {
  name: "restore",
  summary: "restore (not implemented yet)",
  usage: "ckpt restore [OPTIONS]",
  options: [],
  run() {
    return Promise.reject(new CkptError("restore is not implemented yet"));
  },
};
