import { CkptError } from "../errors.ts";
import type { CommandSpec } from "../cli/spec.ts";

export const showCommand: CommandSpec = {
  name: "show",
  summary: "show (not implemented yet)",
  usage: "ckpt show [OPTIONS]",
  options: [],
  run() {
    return Promise.reject(new CkptError("show is not implemented yet"));
  },
};
