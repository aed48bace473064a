// Fault-injection hook for the tests (like CRIU's CRIU_FAULT): with
// CKPT_FAULT_PAUSE=NAME in the environment, ckpt stops for a while at the
// point of that name, so a test can kill it exactly there.
import { log } from "./log.ts";

const sleeper = new Int32Array(new SharedArrayBuffer(4));

export function faultPoint(name: string): void {
  if (Deno.env.get("CKPT_FAULT_PAUSE") !== name) return;
  log.info(`fault point ${name}: pausing`);
  Atomics.wait(sleeper, 0, 0, 500);
}
