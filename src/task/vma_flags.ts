// madvise state, locked and sealed memory, both halves. Dump: each mapping's
// VmFlags from /proc/PID/smaps (read once, while the injector's scratch page
// exists: that page is a mapping made now, so its flags are what mlockall
// (MCL_FUTURE) gives every new mapping — the mm's def_flags, which nothing
// else shows). Restore: ops the restorer runs once memory is in place, before
// credentials are set (mlock beyond RLIMIT_MEMLOCK needs ckpt's
// CAP_IPC_LOCK; the task held that memory locked at dump).
import { MlockMode, type TaskCore, type Vma, VmaKind } from "../gen/ckpt/images_pb.ts";
import { readProcText } from "../proc/read.ts";
import { OP, PHASE, type PlanOp } from "../restore/plan_buffer.ts";
import { hex } from "../util/units.ts";

/** Vma.advice bits, each one madvise(2) state. */
export const ADVICE = {
  DONTFORK: 1,
  DONTDUMP: 2,
  WIPEONFORK: 4,
  HUGEPAGE: 8,
  NOHUGEPAGE: 16,
  MERGEABLE: 32,
  SEQUENTIAL: 64,
  RANDOM: 128,
} as const;

/** VmFlags mnemonic, advice bit, madvise advice that sets it. */
const FLAGS: [string, number, number, string][] = [
  ["dc", ADVICE.DONTFORK, 10, "MADV_DONTFORK"],
  ["dd", ADVICE.DONTDUMP, 16, "MADV_DONTDUMP"],
  ["wf", ADVICE.WIPEONFORK, 18, "MADV_WIPEONFORK"],
  ["hg", ADVICE.HUGEPAGE, 14, "MADV_HUGEPAGE"],
  ["nh", ADVICE.NOHUGEPAGE, 15, "MADV_NOHUGEPAGE"],
  ["mg", ADVICE.MERGEABLE, 12, "MADV_MERGEABLE"],
  ["sr", ADVICE.SEQUENTIAL, 2, "MADV_SEQUENTIAL"],
  ["rr", ADVICE.RANDOM, 1, "MADV_RANDOM"],
];
const ALL_ADVICE = FLAGS.reduce((a, f) => a | f[1], 0);

const SYS_madvise = 28, SYS_mlock = 149, SYS_mlockall = 151, SYS_mlock2 = 325, SYS_mseal = 462;
const MLOCK_ONFAULT = 1, MCL_FUTURE = 2, MCL_ONFAULT = 4;

/** One smaps entry: its range and VmFlags mnemonics. */
export interface SmapsFlags {
  start: bigint;
  end: bigint;
  flags: Set<string>;
}

/** Every mapping's VmFlags (smaps walks the page tables for its counters:
 * about 15 ms per GiB resident here, so it is read once per dump). */
export function readVmFlags(pid: number): SmapsFlags[] {
  const out: SmapsFlags[] = [];
  let cur: SmapsFlags | undefined;
  for (const line of readProcText(pid, "smaps").split("\n")) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) {
      cur = { start: BigInt(`0x${range[1]}`), end: BigInt(`0x${range[2]}`), flags: new Set() };
      out.push(cur);
    } else if (cur && line.startsWith("VmFlags:")) {
      cur.flags = new Set(line.slice(8).trim().split(/\s+/));
    }
  }
  return out;
}

/** The entry holding addr (entries are in address order, as smaps lists them). */
function entryAt(entries: SmapsFlags[], addr: bigint): SmapsFlags | undefined {
  let lo = 0, hi = entries.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const e = entries[mid];
    if (addr < e.start) hi = mid - 1;
    else if (addr >= e.end) lo = mid + 1;
    else return e;
  }
  return undefined;
}

function mlockOf(flags: Set<string>): MlockMode {
  if (!flags.has("lo")) return MlockMode.MLOCK_NONE;
  return flags.has("lf") ? MlockMode.MLOCK_ONFAULT : MlockMode.MLOCK_LOCKED;
}

/** Flags read with a task's core (collectTask), for its mappings. */
const seenWith = new WeakMap<TaskCore, SmapsFlags[]>();

/** At collectTask, the scratch page mapped: every mapping's flags, kept for
 * collectVmas, and what new mappings get (mlockall(MCL_FUTURE)) set in the
 * core. Returns why the task cannot be saved, if it cannot. */
export function noteVmFlags(pid: number, core: TaskCore, scratch: bigint): string[] {
  const entries = readVmFlags(pid);
  seenWith.set(core, entries);
  const fresh = entryAt(entries, scratch)?.flags ?? new Set<string>();
  core.mlockFuture = mlockOf(fresh);
  // PR_SET_MEMORY_MERGE marks every new mapping mergeable; setting it again
  // needs CAP_SYS_RESOURCE, which restore may not have.
  if (fresh.has("mg")) {
    return [
      `pid ${pid} has KSM merging on for all its memory (prctl PR_SET_MEMORY_MERGE), ` +
      `which ckpt cannot restore yet`,
    ];
  }
  return [];
}

/** The flags noted with `core`, if collectTask read them. */
export function vmFlagsOf(core: TaskCore): SmapsFlags[] | undefined {
  return seenWith.get(core);
}

/** Fills in a mapping's advice, mlock and seal from smaps. */
export function applyVmFlags(v: Vma, entries: SmapsFlags[]): void {
  const special = v.kind === VmaKind.VMA_VDSO || v.kind === VmaKind.VMA_VVAR ||
    v.kind === VmaKind.VMA_VVAR_VCLOCK || v.kind === VmaKind.VMA_VSYSCALL;
  // The kernel sets the specials' flags itself when it maps them.
  if (special) return;
  const flags = entryAt(entries, v.start)?.flags;
  if (!flags) return;
  v.advice = FLAGS.reduce((a, [m, bit]) => flags.has(m) ? a | bit : a, 0);
  v.mlock = mlockOf(flags);
  v.sealed = flags.has("sl");
}

/** A fork copy of the task lacks MADV_DONTFORK memory and sees
 * MADV_WIPEONFORK memory as zeros: such memory with pages saved must be read
 * from the task itself. */
export function readInPlace(v: Vma): boolean {
  return (v.advice & (ADVICE.DONTFORK | ADVICE.WIPEONFORK)) !== 0;
}

export function validateVmFlags(v: Vma, fail: (why: string) => never): void {
  if ((v.advice & ~ALL_ADVICE) !== 0) fail(`unknown madvise bits ${hex(BigInt(v.advice))}`);
  if (!(v.mlock in MlockMode)) fail(`unknown mlock mode ${v.mlock}`);
}

/** The restorer's ops that give the task's mappings their madvise, mlock
 * and seal state again, and new mappings their mlockall(MCL_FUTURE). */
export function vmFlagsOps(core: TaskCore, vmas: Vma[]): PlanOp[] {
  const ops: PlanOp[] = [];
  for (const v of vmas) {
    const len = v.end - v.start;
    const at = `the mapping at ${hex(v.start)}`;
    for (const [, bit, advice, name] of FLAGS) {
      if ((v.advice & bit) === 0) continue;
      ops.push({
        op: OP.SYSCALL,
        phase: PHASE.AFTER_MEMORY,
        a: [SYS_madvise, v.start, len, advice],
        what: `madvise(${name}) of ${at}`,
      });
    }
    if (v.mlock !== MlockMode.MLOCK_NONE) {
      const onFault = v.mlock === MlockMode.MLOCK_ONFAULT;
      ops.push({
        op: OP.SYSCALL,
        phase: PHASE.AFTER_MEMORY,
        a: onFault ? [SYS_mlock2, v.start, len, MLOCK_ONFAULT] : [SYS_mlock, v.start, len],
        what: `${onFault ? "mlock2(MLOCK_ONFAULT)" : "mlock"} of ${at}`,
      });
    }
  }
  if (core.mlockFuture !== MlockMode.MLOCK_NONE) {
    const onFault = core.mlockFuture === MlockMode.MLOCK_ONFAULT;
    ops.push({
      op: OP.SYSCALL,
      phase: PHASE.AFTER_MEMORY,
      a: [SYS_mlockall, MCL_FUTURE | (onFault ? MCL_ONFAULT : 0)],
      what: `mlockall(MCL_FUTURE${onFault ? "|MCL_ONFAULT" : ""})`,
    });
  }
  // Sealed last: nothing may change a sealed mapping afterwards.
  for (const v of vmas) {
    if (!v.sealed) continue;
    ops.push({
      op: OP.SYSCALL,
      phase: PHASE.LAST,
      a: [SYS_mseal, v.start, v.end - v.start, 0],
      what: `mseal of the mapping at ${hex(v.start)}`,
    });
  }
  return ops;
}
