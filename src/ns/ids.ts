// Which restored task is which, as ckpt sees them. Every task gets its
// dumped pid at ckpt's level, except in a user namespace of the tree's own:
// forked from inside it, a task has no say over its pid in ckpt's PID
// namespace (clone3 set_tid needs CAP_CHECKPOINT_RESTORE there), so it keeps
// its pids inside and gets any pid here; ckpt recognises it by those.
import type { TaskCore } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { nsPids } from "./pid.ts";

export class TaskIds {
  /** Every task has its dumped ids. */
  static readonly same = new TaskIds([], false);

  private readonly real = new Map<number, number>();
  private readonly dumped = new Map<number, number>();
  private readonly byInner = new Map<string, number>();

  /** `free`: tasks other than the root may have other ids at ckpt's level. */
  constructor(cores: TaskCore[], private readonly free: boolean) {
    if (!free) return;
    for (const c of cores) {
      if (c.nsPids.length > 1) this.byInner.set(c.nsPids.slice(1).join(","), c.pid);
      for (const th of c.threads) {
        if (th.nsTids.length > 1) this.byInner.set(th.nsTids.slice(1).join(","), th.tid);
      }
    }
    // The root is forked by ckpt itself, with its pid at every level.
    if (cores[0]) this.note(cores[0].pid, cores[0].pid);
  }

  private note(actual: number, dumped: number): void {
    this.real.set(dumped, actual);
    this.dumped.set(actual, dumped);
  }

  /** The dumped tid of the task or thread ckpt sees as `actual`: found by
   * its ids inside (NSpid) when first seen. */
  dumpedOf(actual: number): number {
    if (!this.free) return actual;
    const known = this.dumped.get(actual);
    if (known !== undefined) return known;
    let inner: number[];
    try {
      inner = nsPids(actual, actual).slice(1);
    } catch {
      return actual; // gone already: its exit says the rest
    }
    const d = this.byInner.get(inner.join(","));
    if (d === undefined) {
      throw new RestoreError(
        `an unexpected task ${actual} (pid ${inner.join("/")} inside) appeared during restore`,
      );
    }
    this.note(actual, d);
    return d;
  }

  /** The tid ckpt sees now for a dumped one (itself until it is known). */
  realOf(dumped: number): number {
    return this.real.get(dumped) ?? dumped;
  }
}
