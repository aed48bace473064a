// Every command ckpt has, in the order --help lists them.
import { checkCommand } from "../commands/check.ts";
import { dumpCommand } from "../commands/dump.ts";
import { preDumpCommand } from "../commands/pre_dump.ts";
import { restoreCommand } from "../commands/restore.ts";
import { showCommand } from "../commands/show.ts";
import { socketsCommand } from "../commands/sockets.ts";
import { swrkCommand } from "../commands/swrk.ts";
import { serviceCommand } from "../commands/service.ts";
import { criuCommand } from "../commands/criu.ts";
import type { CommandSpec } from "./spec.ts";

export const COMMANDS: CommandSpec[] = [
  dumpCommand,
  preDumpCommand,
  restoreCommand,
  checkCommand,
  showCommand,
  socketsCommand,
  swrkCommand,
  serviceCommand,
  criuCommand,
];
