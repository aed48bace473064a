// Seccomp at restore: each thread gets its mode and filters back with the
// dumped sharing. A thread inherits its creator's filters at clone, and a
// filter installed later belongs to the installing thread alone, so the tree
// of filters is rebuilt by creating each thread from a thread that holds
// just the filters it is to share: the main thread walks down towards its
// own filter, and at each filter on the way creates the threads that sit
// there and one thread per side branch, which walks that branch the same way
// (ops of phase PHASE.THREAD + i, run by thread i itself). It all happens
// before credentials are set, while the task still has CAP_SYS_ADMIN (a
// filter installed without no_new_privs needs it), and has no effect on the
// restorer itself: ckpt traces it with PTRACE_O_SUSPEND_SECCOMP until it
// lets the task go. Strict mode is entered last, by its thread.
import type { SeccompFilter, TaskCore } from "../gen/ckpt/images_pb.ts";
import { OP, type OpBytes, PHASE, type PlanOp } from "./plan_buffer.ts";

const NR_SECCOMP = 317;
const SECCOMP_SET_MODE_STRICT = 0, SECCOMP_SET_MODE_FILTER = 1;
const SECCOMP_FILTER_FLAG_LOG = 2n;

export function hasSeccomp(core: TaskCore): boolean {
  return core.threads.some((t) => t.seccompMode !== 0);
}

/** The ops that recreate the task's threads with their seccomp state; none
 * when no thread has any (the main thread then creates every thread). */
export function seccompOps(core: TaskCore): PlanOp[] {
  if (!hasSeccomp(core)) return [];
  const threads = core.threads;
  const filters = new Map(core.seccompFilters.map((f) => [f.id, f]));
  const nodeOf = (i: number) => threads[i].seccompMode === 2 ? threads[i].seccompFilter : 0;
  const pathTo = (id: number): number[] => {
    const out: number[] = [];
    for (let x = id; x; x = filters.get(x)?.parent ?? 0) out.unshift(x);
    return out;
  };
  const below = new Map<number, number[]>(); // filter -> filters on top of it
  for (const f of core.seccompFilters) {
    below.set(f.parent, [...(below.get(f.parent) ?? []), f.id]);
  }
  const paths = threads.map((_, i) => pathTo(nodeOf(i)));
  const ops: PlanOp[] = [];
  const progs = new Map<number, OpBytes>();
  const prog = (f: SeccompFilter): OpBytes => {
    let p = progs.get(f.id);
    if (!p) {
      // struct sock_fprog { u16 len; sock_filter *filter; }: the pointer is
      // placed once the plan's address is known.
      const bytes = new Uint8Array(16);
      new DataView(bytes.buffer).setUint16(0, f.insns.length / 8, true);
      p = { bytes };
      progs.set(f.id, p);
      ops.push({
        op: OP.RELOC,
        phase: PHASE.AFTER_MEMORY,
        a: [{ bytes, plus: 8 }, { bytes: new Uint8Array(f.insns) }],
        what: `placing seccomp filter ${f.id} of pid ${core.pid}`,
      });
    }
    return p;
  };
  const created = new Set<number>([0]);
  const spawn = (by: number, i: number) => {
    created.add(i);
    ops.push({
      op: OP.THREAD,
      phase: PHASE.THREAD + by,
      a: [i - 1],
      what: `creating thread ${threads[i].tid} of pid ${core.pid}`,
    });
  };
  const inside = (i: number, node: number) => node === 0 || paths[i].includes(node);
  /** Thread w, holding filter `from`, goes down to its own filter, creating
   * on the way the threads of branch `scope` (0: all) that it passes. */
  const walk = (w: number, from: number, scope: number) => {
    const target = paths[w];
    let step = from === 0 ? 0 : target.indexOf(from) + 1;
    for (let cur = from;;) {
      if (scope === 0 || pathTo(cur).includes(scope)) {
        for (let i = 0; i < threads.length; i++) {
          if (!created.has(i) && nodeOf(i) === cur) {
            spawn(w, i);
            walk(i, cur, cur);
          }
        }
        for (const c of below.get(cur) ?? []) {
          if (c === target[step]) continue;
          const v = threads.findIndex((_, i) => !created.has(i) && inside(i, c));
          if (v < 0) continue;
          spawn(w, v);
          walk(v, cur, c);
        }
      }
      if (step >= target.length) break;
      cur = target[step++];
      const f = filters.get(cur)!;
      ops.push({
        op: OP.SYSCALL,
        phase: PHASE.THREAD + w,
        a: [NR_SECCOMP, SECCOMP_SET_MODE_FILTER, f.flags & SECCOMP_FILTER_FLAG_LOG, prog(f)],
        what: `installing seccomp filter ${cur} in thread ${threads[w].tid} of pid ${core.pid}`,
      });
    }
    if (threads[w].seccompMode === 1) {
      ops.push({
        op: OP.SYSCALL,
        phase: PHASE.THREAD + w,
        a: [NR_SECCOMP, SECCOMP_SET_MODE_STRICT, 0, 0],
        what: `entering seccomp strict mode in thread ${threads[w].tid} of pid ${core.pid}`,
      });
    }
  };
  walk(0, 0, 0);
  return ops;
}
