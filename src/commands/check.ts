import { CkptError } from "../errors.ts";
import type { CommandSpec } from "../cli/spec.ts";

export const checkCommand: CommandSpec = {
  name: "check",
  summary: "check (not implemented yet)",
  usage: "ckpt check [OPTIONS]",
  options: [],
  run() {
    return Promise.reject(new CkptError("check is not implemented yet"));
  },
};
