// ckpt as a library: typed functions for embedders. The CLI (main.ts) is a
// thin layer over these.
export { check } from "./src/api/check.ts";
export type { CheckReport, ProbeResult } from "./src/api/check.ts";
