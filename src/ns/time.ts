// Time namespaces: the offsets of CLOCK_MONOTONIC and CLOCK_BOOTTIME. A
// restored tree gets a new time namespace whose offsets make its clocks go
// on from where they were when it was frozen, so timers and timestamps taken
// from them neither jump nor go back — for a tree that had a time namespace
// of its own, always; for one that shared ckpt's, with --time-ns.
import { create } from "@bufbuild/protobuf";
import {
  type Clocks,
  ClocksSchema,
  type TimeNamespace,
  TimeNamespaceSchema,
} from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import { CLOCK_BOOTTIME, CLOCK_MONOTONIC, clockNs } from "../native/ns.ts";
import { nsOf } from "./kinds.ts";

const NS = 1_000_000_000n;

/** /proc/PID/timens_offsets (those of the task's namespace for children,
 * which is its own unless it unshared one it has not entered). */
export function readOffsets(pid: number | "self"): TimeNamespace {
  const text = Deno.readTextFileSync(`/proc/${pid}/timens_offsets`);
  const off = (name: string) => {
    const m = new RegExp(`^${name}\\s+(-?\\d+)\\s+(\\d+)`, "m").exec(text);
    return m ? BigInt(m[1]) * NS + BigInt(m[2]) : 0n;
  };
  return create(TimeNamespaceSchema, {
    monotonicNs: off("monotonic"),
    boottimeNs: off("boottime"),
  });
}

export function checkTimeRoot(pid: number): void {
  const own = nsOf(pid, "time");
  const kids = nsOf(pid, "time", true);
  if (own !== undefined && kids !== undefined && own !== kids) {
    throw new DumpError(
      `pid ${pid} made a time namespace for its children (unshare) that it has not entered; ` +
        `this cannot be dumped yet`,
    );
  }
}

/** The tree's clocks now, as it sees them: ckpt's plus the difference of
 * the two namespaces' offsets. */
export function treeClocks(pid: number): Clocks {
  const theirs = readOffsets(pid);
  const ours = readOffsets("self");
  return create(ClocksSchema, {
    monotonicNs: clockNs(CLOCK_MONOTONIC) - ours.monotonicNs + theirs.monotonicNs,
    boottimeNs: clockNs(CLOCK_BOOTTIME) - ours.boottimeNs + theirs.boottimeNs,
  });
}

/** What to write to the timens_offsets of a new namespace so its clocks
 * read `clocks` now (the host's clocks are ckpt's minus its own offsets). */
export function offsetsFor(clocks: Clocks): string {
  const ours = readOffsets("self");
  const line = (name: string, want: bigint, clock: number, own: bigint) => {
    const off = want - (clockNs(clock) - own);
    // Whole seconds rounded down, nanoseconds 0..999999999.
    let sec = off / NS;
    let nsec = off % NS;
    if (nsec < 0n) {
      sec -= 1n;
      nsec += NS;
    }
    return `${name} ${sec} ${nsec}\n`;
  };
  return line("monotonic", clocks.monotonicNs, CLOCK_MONOTONIC, ours.monotonicNs) +
    line("boottime", clocks.boottimeNs, CLOCK_BOOTTIME, ours.boottimeNs);
}
