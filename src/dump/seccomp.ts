// Seccomp at dump: each thread's mode and filters. Filters come one per
// PTRACE_SECCOMP_GET_FILTER index, oldest first, for each thread; threads
// that inherited a filter (created after it, or synced with TSYNC) share the
// kernel object, which nothing exposes, so a filter is taken for shared when
// it has the same program and flags on top of the same parent: the filters
// form a tree, recreated as one at restore (src/restore/seccomp.ts). Two
// threads that installed identical programs each on their own are restored
// sharing one; they behave alike in every way but a later TSYNC.
import { create } from "@bufbuild/protobuf";
import { type SeccompFilter, SeccompFilterSchema } from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import { ptrace } from "../native/mod.ts";
import { readStatus } from "../proc/status.ts";

export interface ThreadSeccomp {
  /** 0 off, 1 strict, 2 filter. */
  mode: number;
  /** The newest filter's id (0: none). */
  filter: number;
  noNewPrivs: boolean;
}

export interface TaskSeccomp {
  threads: Map<number, ThreadSeccomp>;
  filters: SeccompFilter[];
}

const BPF_RET_K = 0x06;
const SECCOMP_RET_ACTION_FULL = 0xffff0000;
const SECCOMP_RET_USER_NOTIF = 0x7fc00000;
/** The kernel's limits: BPF_MAXINSNS per program, MAX_INSNS_PER_PATH. */
export const SECCOMP_LIMITS = { insns: 4096, pathInsns: 32768 };

/** Each thread's seccomp state from /proc, without touching the task. */
export function seccompModes(pid: number, tids: number[]): Map<number, ThreadSeccomp> {
  return new Map(tids.map((tid) => {
    const st = readStatus(pid, tid);
    return [tid, {
      mode: Number(st.get("Seccomp") ?? 0),
      filter: 0,
      noNewPrivs: st.get("NoNewPrivs") === "1",
    }];
  }));
}

/** Refuses, before anything is injected, a task under seccomp when ckpt
 * could not suspend it: an injected call could be killed or answered by the
 * filter. */
export function refuseUnsuspended(pid: number, modes: Map<number, ThreadSeccomp>): void {
  for (const [tid, s] of modes) {
    if (s.mode === 0) continue;
    throw new DumpError(
      `pid ${pid} (thread ${tid}) runs under seccomp (${
        s.mode === 1 ? "strict" : "filter"
      } mode) ` +
        `and the kernel would not suspend it for ckpt (PTRACE_O_SUSPEND_SECCOMP needs ` +
        `CAP_SYS_ADMIN and a ckpt not itself under seccomp); run ckpt with those`,
    );
  }
}

/** Every thread's filters, read over ptrace from the frozen threads. */
export function collectSeccomp(pid: number, tids: number[]): TaskSeccomp {
  const threads = seccompModes(pid, tids);
  const filters: SeccompFilter[] = [];
  const known = new Map<string, number>();
  for (const [tid, s] of threads) {
    if (s.mode !== 2) continue;
    let parent = 0;
    for (let i = 0;; i++) {
      const f = ptrace.seccompFilter(tid, i);
      if (!f) break;
      refuseUserNotif(pid, tid, f.insns);
      const key = `${parent}/${f.flags}/${hex(f.insns)}`;
      let id = known.get(key);
      if (id === undefined) {
        id = filters.length + 1;
        known.set(key, id);
        filters.push(create(SeccompFilterSchema, { id, parent, insns: f.insns, flags: f.flags }));
      }
      parent = id;
    }
    s.filter = parent;
  }
  return { threads, filters };
}

/** A filter that hands calls to a supervisor needs its listener, an fd
 * somewhere else; without one the calls would fail with ENOSYS. */
function refuseUserNotif(pid: number, tid: number, insns: Uint8Array): void {
  const dv = new DataView(insns.buffer, insns.byteOffset, insns.byteLength);
  for (let o = 0; o + 8 <= insns.length; o += 8) {
    const code = dv.getUint16(o, true), k = dv.getUint32(o + 4, true);
    if (code === BPF_RET_K && ((k & SECCOMP_RET_ACTION_FULL) >>> 0) === SECCOMP_RET_USER_NOTIF) {
      throw new DumpError(
        `pid ${pid} (thread ${tid}) has a seccomp filter that hands system calls to a ` +
          `supervisor (SECCOMP_RET_USER_NOTIF); its listener cannot be carried over`,
      );
    }
  }
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
