// The pids that queued messages name as their senders' (SCM_CREDENTIALS).
// The kernel accepts a pid there only if some process has it when the
// message is sent, and keeps a reference to that pid, whose number is what a
// receiver reads — even after the process is gone. Queues are refilled
// before the tree is forked, so the tree's own pids do not exist yet (and a
// sender that exited before the dump has none either): each such pid is
// held by a child of ckpt made with exactly that pid (clone3 set_tid), which
// exits at once and is reaped once the queues are in, before the tree's
// tasks are forked with their pids. A pid another process has now is named
// as it is: the number is all a message keeps of it.
import { holdPid, releasePid } from "../native/private.ts";

export class SenderPids {
  private readonly held = new Set<number>();
  private readonly taken = new Set<number>();

  /** Makes `pid` exist (for as long as this holds it). */
  ensure(pid: number): void {
    if (pid === Deno.pid || this.held.has(pid) || this.taken.has(pid)) return;
    if (holdPid(pid)) this.held.add(pid);
    else this.taken.add(pid);
  }

  /** `pid` was taken by a process that is gone now: hold it ourselves. */
  lost(pid: number): void {
    this.taken.delete(pid);
    this.ensure(pid);
  }

  releaseAll(): void {
    for (const pid of this.held) releasePid(pid);
    this.held.clear();
    this.taken.clear();
  }
}
