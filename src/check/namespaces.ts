// Namespaces restore may create for the tree.
import { probe, type ProbeResult, type ProbeSpec, yes } from "./types.ts";

const TIME_NS: ProbeSpec = {
  name: "time namespace",
  required: false,
  why: "to keep CLOCK_MONOTONIC and CLOCK_BOOTTIME running on from where the tree saw them",
};

export function namespaceProbes(): Promise<ProbeResult[]> {
  return Promise.all([probe(TIME_NS, () => {
    const ns = Deno.readLinkSync("/proc/self/ns/time");
    return yes(`/proc/self/ns/time is ${ns}`);
  }, () => "the kernel was built without CONFIG_TIME_NS (before 5.6, or disabled)")]);
}
