// Runs every probe of `ckpt check`, in the order they are reported.
import { capabilityProbes } from "./caps.ts";
import { cloneProbes } from "./clone.ts";
import { memoryProbes } from "./memory.ts";
import { namespaceProbes } from "./namespaces.ts";
import { processProbes } from "./process.ts";
import { sockdiagProbes } from "./sockdiag.ts";
import { netProbes } from "./net.ts";
import type { CheckReport, ProbeResult } from "./types.ts";

export type { CheckReport, ProbeResult } from "./types.ts";

function kernel(): string {
  try {
    return Deno.readTextFileSync("/proc/sys/kernel/osrelease").trim();
  } catch {
    return "unknown";
  }
}

export async function runProbes(): Promise<CheckReport> {
  // One family at a time: the process probes own a child and ptrace state
  // that nothing else should race with.
  const families = [
    processProbes,
    cloneProbes,
    sockdiagProbes,
    netProbes,
    memoryProbes,
    namespaceProbes,
    capabilityProbes,
  ];
  const probes: ProbeResult[] = [];
  for (const family of families) probes.push(...await family());
  return { ok: probes.every((p) => p.ok || !p.required), kernel: kernel(), probes };
}
