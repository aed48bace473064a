// PID namespaces: a task's pid at every level (NSpid), the checks that make
// a tree restorable (its root is the init of its own namespace, and every
// other task is in the root's, or is the init of one nested in it), and the
// clone3 set_tid arrays (innermost first) that give every task and thread
// its pid at every level again.
import { DumpError } from "../errors.ts";
import type { TaskCore } from "../gen/ckpt/images_pb.ts";
import { readStatus, statusInts } from "../proc/status.ts";
import { nsOf } from "./kinds.ts";

/** NSpid of a task or thread as ckpt's /proc shows it: ckpt's level first. */
export function nsPids(pid: number, tid?: number): number[] {
  return statusInts(readStatus(pid, tid), "NSpid");
}

/** The dumped levels of a task ([pid] when it has only ckpt's). */
export function levelsOf(core: TaskCore): number[] {
  return core.nsPids.length ? core.nsPids : [core.pid];
}

/** clone3's set_tid: innermost first. Empty for a task at ckpt's level
 * alone (the plain pid is used). `inner`: only the levels below ckpt's (a
 * task in a user namespace of its own cannot choose its pid in ckpt's). */
export function setTidOf(levels: number[], inner = false): number[] {
  if (levels.length < 2) return [];
  return (inner ? levels.slice(1) : levels).toReversed();
}

/** Whether a root in a PID namespace other than ckpt's can be dumped: only
 * as the namespace's init. */
export function checkPidRoot(pid: number): void {
  const levels = nsPids(pid);
  if (levels.length > 1 && levels.at(-1) !== 1) {
    throw new DumpError(
      `pid ${pid} is pid ${levels.at(-1)} in its PID namespace, not the namespace's init; ` +
        `dump the tree from the init (pid 1 there)`,
    );
  }
}

/** Per task of a frozen tree (parents first), its NSpid; refuses tasks whose
 * PID namespace the restore could not make again. */
export function checkPidTree(
  tasks: { pid: number; ppid: number; zombie: boolean }[],
): Map<number, number[]> {
  const out = new Map<number, number[]>();
  const rootNs = nsOf(tasks[0].pid, "pid");
  for (const [i, t] of tasks.entries()) {
    const levels = nsPids(t.pid);
    out.set(t.pid, levels);
    const parent = out.get(t.ppid);
    if (t.zombie) {
      // Its namespaces are gone; its levels say where it was.
      if (parent && levels.length !== parent.length) {
        throw new DumpError(`zombie pid ${t.pid} was in another PID namespace than its parent`);
      }
      continue;
    }
    const mine = nsOf(t.pid, "pid");
    const forKids = nsOf(t.pid, "pid", true);
    if (forKids !== undefined && forKids !== mine) {
      throw new DumpError(
        `pid ${t.pid} made a PID namespace for its children (unshare) other than its own; ` +
          `this cannot be dumped yet`,
      );
    }
    if (i === 0 || !parent) continue;
    if (mine === nsOf(t.ppid, "pid") && levels.length === parent.length) continue;
    if (levels.length === parent.length + 1 && levels.at(-1) === 1) continue;
    throw new DumpError(
      `pid ${t.pid} is in a PID namespace (${mine}) that is neither its parent's nor one ` +
        `it is the init of (the tree's root is in ${rootNs}); such a tree cannot be dumped`,
    );
  }
  return out;
}

/** A pid of ckpt's level as `task` sees it (its own PID namespace's
 * number), from the dumped levels of the tree's tasks; 0 when the pid has no
 * number there (it is outside that namespace). */
export function pidAsSeenBy(pid: number, task: TaskCore, tree: Map<number, TaskCore>): number {
  const mine = levelsOf(task);
  if (mine.length === 1) return pid;
  const other = tree.get(pid);
  if (!other) return 0;
  const theirs = levelsOf(other);
  if (theirs.length < mine.length) return 0;
  // In the task's namespace (or one nested in it) when it descends from the
  // init of the task's namespace.
  const init = nsInit(task, tree);
  for (let c: TaskCore | undefined = other; c; c = tree.get(c.ppid)) {
    if (c.pid === init) return theirs[mine.length - 1];
    if (c.pid === c.ppid) break;
  }
  return 0;
}

/** The task at ckpt's level that is the init of `task`'s PID namespace (the
 * tree's root for the root's namespace). */
function nsInit(task: TaskCore, tree: Map<number, TaskCore>): number {
  let c = task;
  for (;;) {
    const parent = tree.get(c.ppid);
    if (!parent || levelsOf(parent).length < levelsOf(c).length) return c.pid;
    c = parent;
  }
}
