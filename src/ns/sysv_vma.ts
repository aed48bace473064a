// Mappings of System V shared memory (shmat): dump records which segment a
// mapping is (its inode is the segment's id), where it starts in it and how
// it was attached; restore attaches the segment again at the same address in
// the task itself (shmat is what makes shmdt work later), cuts away what the
// task had unmapped, and gives each part its protection back. The segments
// themselves come back with the tree's IPC namespace (ipc.ts), or, for one of
// ckpt's namespace, are the same segment, which must still be there.
import { DumpError, RestoreError } from "../errors.ts";
import type { Vma } from "../gen/ckpt/images_pb.ts";
import { IPC_STAT, shmctl } from "../native/ns.ts";
import { NativeError } from "../native/mod.ts";
import type { MapsEntry } from "../proc/maps.ts";
import type { SmapsFlags } from "../task/vma_flags.ts";
import { hex } from "../util/units.ts";
import { OP, PHASE, type PlanOp } from "../restore/plan_buffer.ts";
import { inNamespacesOf } from "./enter.ts";
import { nsOf, ownNs } from "./kinds.ts";
import { SHM_DEST } from "./sysv.ts";

export function isSysvMapping(e: MapsEntry): boolean {
  return e.name.startsWith("/SYSV") && e.shared;
}

export interface SysvVmaFields {
  shmemId: number;
  shmemSize: bigint;
  mayWrite: boolean;
}

/** What a task's System V mappings need beyond /proc/PID/maps: VmFlags from
 * smaps (whether the attach may write: SHM_RDONLY clears it) and the
 * segment's size. Execute is not an attach mode that matters: mprotect
 * gives each part its protection afterwards, PROT_EXEC included. */
export class SysvMappings {
  private readonly sizes = new Map<number, bigint>();

  /** flags: the task's smaps VmFlags. */
  constructor(private readonly pid: number, private readonly flags: SmapsFlags[]) {}

  fields(e: MapsEntry): SysvVmaFields {
    const id = e.inode;
    return {
      shmemId: id,
      shmemSize: this.size(id, e),
      mayWrite: this.flags.find((f) => f.start === e.start)?.flags.has("mw") ?? false,
    };
  }

  private size(id: number, e: MapsEntry): bigint {
    let s = this.sizes.get(id);
    if (s !== undefined) return s;
    const own = nsOf(this.pid, "ipc") === ownNs("ipc");
    const ds = new Uint8Array(112);
    try {
      inNamespacesOf(this.pid, ["ipc"], () => shmctl(id, IPC_STAT, ds));
    } catch (err) {
      if (err instanceof NativeError) {
        throw new DumpError(
          `pid ${this.pid}: System V segment ${id} mapped at ${hex(e.start)} cannot be read ` +
            `(${err.message})`,
        );
      }
      throw err;
    }
    const dv = new DataView(ds.buffer);
    if (own && (dv.getUint32(20, true) & SHM_DEST)) {
      throw new DumpError(
        `pid ${this.pid}: System V segment ${id} (mapped at ${hex(e.start)}) of ckpt's IPC ` +
          `namespace is marked removed and goes with its last attach; dump the tree in an IPC ` +
          `namespace of its own to save it`,
      );
    }
    s = dv.getBigUint64(48, true);
    this.sizes.set(id, s);
    return s;
  }
}

const SHM_RDONLY = 0o10000;
const PROT_READ = 1, PROT_WRITE = 2;
const PAGE = 4096n;
const NR = { shmat: 30, munmap: 11, mprotect: 10 };

/** One shmat of a segment: the mappings it had become (all of them sharing
 * the attach address start - pgoff). */
export interface SysvAttach {
  id: number;
  base: bigint;
  size: bigint;
  vmas: Vma[];
}

/** Groups a task's System V mappings into the attaches they came from. */
export function sysvAttaches(vmas: Vma[]): SysvAttach[] {
  const out = new Map<string, SysvAttach>();
  for (const v of vmas) {
    const base = v.start - v.pgoff;
    const key = `${v.shmemId}@${base}`;
    let a = out.get(key);
    if (!a) out.set(key, a = { id: v.shmemId, base, size: v.shmemSize, vmas: [] });
    a.vmas.push(v);
  }
  return [...out.values()];
}

/** The address range an attach takes while it is made (the restorer must
 * live elsewhere). */
export function attachRange(a: SysvAttach): [bigint, bigint] {
  return [a.base, a.base + ((a.size + PAGE - 1n) / PAGE) * PAGE];
}

/** A segment of ckpt's own IPC namespace that a task had mapped must be the
 * same one still: same id, key and size. */
export function checkHostSegment(pid: number, a: SysvAttach): void {
  const ds = new Uint8Array(112);
  const name = a.vmas[0].name;
  try {
    shmctl(a.id, IPC_STAT, ds);
  } catch {
    throw new RestoreError(
      `pid ${pid}: System V shared memory segment ${a.id} (${name}) is gone; the task had it ` +
        `mapped at ${hex(a.vmas[0].start)}`,
    );
  }
  const dv = new DataView(ds.buffer);
  const key = (dv.getInt32(0, true) >>> 0).toString(16).padStart(8, "0");
  if (dv.getBigUint64(48, true) !== a.size || !name.startsWith(`/SYSV${key}`)) {
    throw new RestoreError(
      `pid ${pid}: System V shared memory segment ${a.id} is not the one the task had mapped ` +
        `(${name}, ${a.size} bytes)`,
    );
  }
}

/** The ops that make one attach again in the task, once its other memory
 * is in place: shmat at the address, munmap of what had been unmapped, and
 * each part's protection. */
export function attachOps(a: SysvAttach): PlanOp[] {
  const w = a.vmas.some((v) => v.mayWrite);
  const flags = w ? 0 : SHM_RDONLY;
  const what = `attaching System V segment ${a.id} at ${hex(a.base)}`;
  const ops: PlanOp[] = [{
    op: OP.SYSCALL,
    phase: PHASE.AFTER_MEMORY,
    a: [NR.shmat, a.id, a.base, flags],
    what,
  }];
  const [lo, hi] = attachRange(a);
  let cur = lo;
  const sorted = a.vmas.toSorted((p, q) => (p.start < q.start ? -1 : 1));
  for (const v of [...sorted, undefined]) {
    const next = v ? v.start : hi;
    if (next > cur) {
      ops.push({
        op: OP.SYSCALL,
        phase: PHASE.AFTER_MEMORY,
        a: [NR.munmap, cur, next - cur],
        what: `${what}: unmapping ${hex(cur)}-${hex(next)}`,
      });
    }
    if (v) cur = v.end;
  }
  const attached = PROT_READ | (w ? PROT_WRITE : 0);
  for (const v of sorted) {
    if (v.prot === attached) continue;
    ops.push({
      op: OP.SYSCALL,
      phase: PHASE.AFTER_MEMORY,
      a: [NR.mprotect, v.start, v.end - v.start, v.prot],
      what: `${what}: protection of ${hex(v.start)}-${hex(v.end)}`,
    });
  }
  return ops;
}
