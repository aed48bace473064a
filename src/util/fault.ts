// Fault-injection hook for the tests (like CRIU's CRIU_FAULT): with
// CKPT_FAULT_PAUSE=NAME in the environment, ckpt stops for a while at the
// point of that name, so a test can kill it exactly there.
import { log } from "./log.ts";
import { sleepSync } from "./sleep.ts";

export function faultPoint(name: string): void {
  if (Deno.env.get("CKPT_FAULT_PAUSE") !== name) return;
  log.info(`fault point ${name}: pausing`);
  sleepSync(500);
}
