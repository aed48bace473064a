// The shape of a `ckpt check` answer, shared by the probes, the API and the CLI.
import { describe } from "../errors.ts";

export interface ProbeResult {
  /** Short stable name, e.g. "ptrace seize" or "CAP_SYS_PTRACE". */
  name: string;
  /** ckpt cannot dump or restore without it. */
  required: boolean;
  ok: boolean;
  /** What the probe saw, or why it failed, in plain words. */
  detail: string;
  /** What ckpt uses it for. */
  why: string;
}

export interface CheckReport {
  /** Every required probe passed. */
  ok: boolean;
  kernel: string;
  probes: ProbeResult[];
}

export interface ProbeSpec {
  name: string;
  required: boolean;
  why: string;
}

/** A probe's outcome; thrown errors become a "no" with their message. */
export interface Outcome {
  ok: boolean;
  detail: string;
}

export const yes = (detail: string): Outcome => ({ ok: true, detail });
export const no = (detail: string): Outcome => ({ ok: false, detail });

/** Runs one probe; any error is its answer, never the end of the whole check. */
export async function probe(
  spec: ProbeSpec,
  run: () => Outcome | Promise<Outcome>,
  hint?: (err: unknown) => string | undefined,
): Promise<ProbeResult> {
  try {
    return { ...spec, ...(await run()) };
  } catch (err) {
    const extra = hint?.(err);
    return { ...spec, ok: false, detail: describe(err) + (extra ? `; ${extra}` : "") };
  }
}

/** A probe that could not even start, e.g. when its test process failed. */
export function failed(spec: ProbeSpec, detail: string): ProbeResult {
  return { ...spec, ok: false, detail };
}
