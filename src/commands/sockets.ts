import { CkptError } from "../errors.ts";
import type { CommandSpec } from "../cli/spec.ts";

export const socketsCommand: CommandSpec = {
  name: "sockets",
  summary: "sockets (not implemented yet)",
  usage: "ckpt sockets [OPTIONS]",
  options: [],
  run() {
    return Promise.reject(new CkptError("sockets is not implemented yet"));
  },
};
