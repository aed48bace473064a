// Library API: which kernel features this machine offers ckpt.
import { type CheckReport, runProbes } from "../check/mod.ts";

export type { CheckReport, ProbeResult } from "../check/mod.ts";

/** Probes every kernel feature ckpt relies on. Never throws for a missing
 * feature: each probe reports ok/detail, and `ok` is true when every
 * required one works. */
export async function check(): Promise<CheckReport> {
  return await runProbes();
}
