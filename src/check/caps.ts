// Capabilities ckpt's process holds (CapEff), and what each one is for.
import { probe, type ProbeResult, type ProbeSpec, yes } from "./types.ts";
import { CkptError } from "../errors.ts";

const CAP = {
  SETGID: 6,
  SETUID: 7,
  DAC_OVERRIDE: 1,
  SYS_PTRACE: 19,
  SYS_ADMIN: 21,
  SYS_RESOURCE: 24,
  CHECKPOINT_RESTORE: 40,
} as const;

interface CapProbe extends ProbeSpec {
  /** Held when any of these bits is set. */
  anyOf: number[];
  /** What it means when it is missing. */
  missing: string;
}

const PROBES: CapProbe[] = [
  {
    name: "CAP_SYS_PTRACE",
    required: true,
    why: "to seize, inspect and copy from tasks of any user",
    anyOf: [CAP.SYS_PTRACE],
    missing: "ckpt can only dump trees it could ptrace anyway (same user, Yama permitting)",
  },
  {
    name: "CAP_CHECKPOINT_RESTORE",
    required: true,
    why: "to pick PIDs with clone3 set_tid and to read /proc/PID/map_files",
    anyOf: [CAP.CHECKPOINT_RESTORE, CAP.SYS_ADMIN],
    missing: "restore cannot give tasks their PIDs back (CAP_SYS_ADMIN would also do)",
  },
  {
    name: "CAP_SYS_ADMIN",
    required: false,
    why: "for namespaces and mounts; a plain tree needs only CAP_CHECKPOINT_RESTORE",
    anyOf: [CAP.SYS_ADMIN],
    missing: "trees in their own namespaces cannot be restored",
  },
  {
    name: "CAP_SETUID",
    required: true,
    why: "to give restored tasks their user ids",
    anyOf: [CAP.SETUID],
    missing: "only trees running as ckpt's own user can be restored",
  },
  {
    name: "CAP_SETGID",
    required: true,
    why: "to give restored tasks their group ids and supplementary groups",
    anyOf: [CAP.SETGID],
    missing: "only trees running as ckpt's own group can be restored",
  },
  {
    name: "CAP_DAC_OVERRIDE",
    required: false,
    why: "to reopen files the tree had open whatever their permissions",
    anyOf: [CAP.DAC_OVERRIDE],
    missing: "files ckpt's user cannot open will fail the restore",
  },
  {
    name: "CAP_SYS_RESOURCE",
    required: false,
    why: "only to raise hard limits or set mm fields one by one, which ckpt avoids",
    anyOf: [CAP.SYS_RESOURCE],
    missing: "ckpt avoids needing it: limits come from /proc/PID/limits and are never " +
      "raised above their hard limit; mm fields are set at once with PR_SET_MM_MAP",
  },
];

/** The effective capability set of this process. */
export function effectiveCaps(): bigint {
  const status = Deno.readTextFileSync("/proc/self/status");
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  if (!m) throw new Error("no CapEff line in /proc/self/status");
  return BigInt(`0x${m[1]}`);
}

export function capabilityProbes(): Promise<ProbeResult[]> {
  let eff: bigint | undefined;
  return Promise.all(PROBES.map(({ anyOf, missing, ...spec }) =>
    probe(spec, () => {
      eff ??= effectiveCaps();
      const held = anyOf.filter((bit) => (eff! >> BigInt(bit)) & 1n);
      if (held.length === 0) return { ok: false, detail: `not held; ${missing}` };
      const via = held[0] === anyOf[0] ? "" : ` (through ${capName(held[0])})`;
      return yes(`held${via}`);
    })
  ));
}

function capName(bit: number): string {
  const entry = Object.entries(CAP).find(([, v]) => v === bit);
  return entry ? `CAP_${entry[0]}` : `capability ${bit}`;
}

const has = (eff: bigint, bit: number) => ((eff >> BigInt(bit)) & 1n) === 1n;

/** Refuses a dump ckpt cannot do with its capabilities, naming the ones it
 * lacks (instead of the first EPERM from /proc/PID/map_files or ptrace). */
export function requireDumpCapabilities(pid: number): void {
  const eff = effectiveCaps();
  const missing: string[] = [];
  if (!has(eff, CAP.CHECKPOINT_RESTORE) && !has(eff, CAP.SYS_ADMIN)) {
    missing.push("CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN), to read /proc/PID/map_files");
  }
  let theirs: number | undefined;
  try {
    const m = /^Uid:\s+\d+\s+(\d+)/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    theirs = m ? Number(m[1]) : undefined;
  } catch { /* gone: said later */ }
  const me = Number(/^Uid:\s+\d+\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/self/status"))?.[1]);
  if (theirs !== me && !has(eff, CAP.SYS_PTRACE)) {
    missing.push(`CAP_SYS_PTRACE, to freeze pid ${pid} (uid ${theirs}), not ckpt's own user`);
  }
  if (missing.length) {
    throw new CkptError(
      `dump needs root, or these capabilities ckpt lacks: ${missing.join("; ")}`,
    );
  }
}

/** Refuses a restore ckpt cannot do with its capabilities. */
export function requireRestoreCapabilities(needIds: boolean): void {
  const eff = effectiveCaps();
  const missing: string[] = [];
  if (!has(eff, CAP.CHECKPOINT_RESTORE) && !has(eff, CAP.SYS_ADMIN)) {
    missing.push("CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN), to give tasks their pids back");
  }
  if (needIds && !has(eff, CAP.SETUID)) missing.push("CAP_SETUID, to give tasks their user ids");
  if (needIds && !has(eff, CAP.SETGID)) {
    missing.push("CAP_SETGID, to give tasks their group ids and groups");
  }
  if (missing.length) {
    throw new CkptError(
      `restore needs root, or these capabilities ckpt lacks: ${missing.join("; ")}`,
    );
  }
}
