// Restore side of files: opens, inside ckpt, every file the restored tasks
// will hold, one open file description per FileEntry (so fds that shared one
// still do), through the module of its kind; the forked tasks inherit them
// and move them to their dumped numbers. Also gathers the operations each
// task must run on itself once its fds are in place (kind.ts taskOps).
import type { FdEntry, FileEntry, TaskCore } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { log } from "../util/log.ts";
import { OP, type PlanOp } from "../restore/plan_buffer.ts";
import { type FileValidation, localOf, type RestoreContext } from "./kind.ts";
import { kindOf } from "./registry.ts";
import {
  type Authority,
  authorityOf,
  type CheckPolicy,
  ckptAuthority,
  openAs,
} from "./authority.ts";
import { checkInherited } from "./inherit.ts";
import { withHostPaths } from "../mount/view.ts";

export type { FileValidation };

export interface FileOpenOptions {
  validation: FileValidation;
  shellJob: boolean;
  /** --inherit-fd: "pipe:[INO]" / "socket:[INO]" / path → ckpt's own fd. */
  inherit: Map<string, number>;
  /** --ext-unix-sk values and --ext-unix-sk-missing. */
  unix?: { extUnixSk: string[]; missing: "fail" | "disconnect" };
  /** Every task of the tree (the root first): a file is opened with the
   * authority of its first holder, one in flight only with that of the task
   * whose socket holds it, or else of the root. */
  tasks: TaskCore[];
  /** The dump was made in this boot of this machine (inode numbers match). */
  sameMachine: boolean;
  /** The tree's network namespace is not ckpt's: sockets are opened inside
   * it, once it exists (the root's first stop). */
  deferNetwork?: boolean;
  /** Every file is opened late, once the root's mount tree exists (its
   * paths are below the new root): the tree has a mount namespace of its
   * own. */
  deferAll?: boolean;
  /** --tcp-established, --tcp-close. */
  net?: { tcpEstablished: boolean; tcpClose: boolean };
}

/** The name --inherit-fd uses for a file. */
export function inheritKey(f: FileEntry): string {
  return kindOf(f)?.inheritKey?.(f) ?? "";
}

export class OpenedFiles {
  private readonly fds = new Map<number, number>();
  private readonly kept: number[] = [];
  private readonly locals = new Map<object, unknown>();
  private readonly closers: (() => void)[] = [];
  private readonly runners: (() => void)[] = [];
  /** Files some task has already run its taskOps for. */
  private readonly held = new Set<number>();
  /** What is opened only once the root's namespaces (or its mount tree)
   * exist: the placeholder ckpt holds at its number meanwhile, and the
   * copies of it (dups) that must get the same file. */
  private readonly deferredOnes: {
    placeholder: number;
    open: () => number;
    id?: number;
    task?: TaskCore;
    copies: number[];
    real?: number;
  }[] = [];
  private readonly byPlaceholder = new Map<number, (typeof this.deferredOnes)[number]>();
  /** Set while the deferred files are opened: get() then gives real fds. */
  private opening = false;
  /** Every open is deferred (FileOpenOptions.deferAll). */
  readonly deferring: boolean;
  private readonly deferNetwork: boolean;
  private task: TaskCore | undefined;
  private readonly tasks: Map<number, TaskCore>;
  /** What every path restore opens is checked against. */
  readonly policy: CheckPolicy;
  private readonly ctx: RestoreContext;
  /** What the kinds see, for task-level file state (ctty.ts). */
  get context(): RestoreContext {
    return this.ctx;
  }

  constructor(
    private readonly entries: Map<number, FileEntry>,
    opts: FileOpenOptions,
  ) {
    const current = () => this.task ?? opts.tasks[0];
    this.tasks = new Map(opts.tasks.map((t) => [t.pid, t]));
    this.deferring = !!opts.deferAll;
    this.deferNetwork = !!opts.deferNetwork;
    const policy: CheckPolicy = { validation: opts.validation, sameMachine: opts.sameMachine };
    this.policy = policy;
    for (const [key, n] of opts.inherit) checkInherited(n, key, entries);
    this.ctx = {
      validation: opts.validation,
      policy,
      shellJob: opts.shellJob,
      inherit: opts.inherit,
      unix: opts.unix ?? { extUnixSk: [], missing: "fail" },
      net: opts.net ?? { tcpEstablished: false, tcpClose: false },
      entries,
      get task() {
        return current();
      },
      get authority(): Authority {
        const t = current();
        if (!t) throw new RestoreError("no task to act for");
        return authorityOf(t);
      },
      taskOf: (pid) => this.tasks.get(pid),
      get: (id, where, task) => this.get(id, where, task),
      keep: (n) => {
        this.kept.push(n);
        return n;
      },
      local: <T>(owner: object, make: () => T): T => localOf(this.locals, owner, make),
      atClose: (fn) => this.closers.push(fn),
      beforeRun: (fn) => this.runners.push(fn),
      openPath: (path, flags, where, expect) =>
        openAs(this.ctx.authority, path, flags | O.CLOEXEC, where, expect, policy),
      openOperators: (path, flags, where) =>
        openAs(ckptAuthority(), path, flags | O.CLOEXEC, where, undefined, policy),
    };
  }

  /** ckpt's fd for file `id`, opened on first use; `task` is the task it is
   * opened for (its first holder), when it is a task's fd. */
  get(id: number, where: string, task?: TaskCore): number {
    const known = this.fds.get(id);
    if (this.opening) {
      // A kind opening one file needs another (a socket's peer…): the real
      // one, opened now if its turn has not come yet.
      const d = known !== undefined ? this.byPlaceholder.get(known) : undefined;
      if (d) return this.openOne(d);
    }
    if (known !== undefined) return known;
    const f = this.entries.get(id);
    if (!f) throw new RestoreError(`${where} refers to file #${id}, which files.img does not have`);
    const outer = this.task;
    if (task) this.task = task;
    try {
      const n = this.open(f, where);
      this.fds.set(id, n);
      return n;
    } finally {
      this.task = outer;
    }
  }

  /** What `task` must do itself once its fds (`table`) are in place, with
   * `serviceFd` passing one of ckpt's fds into it for the ops. */
  taskOps(
    task: TaskCore,
    table: FdEntry[],
    serviceFd: (ckptFd: number) => number,
  ): PlanOp[] {
    const byFile = new Map<number, number[]>();
    const byFd = new Map<number, number>();
    for (const e of table) {
      const fds = byFile.get(e.fileId);
      if (fds) fds.push(e.fd);
      else byFile.set(e.fileId, [e.fd]);
      byFd.set(e.fd, e.fileId);
    }
    const ops: PlanOp[] = [];
    for (const [id, fds] of byFile) {
      const f = this.entries.get(id);
      const kind = f && kindOf(f);
      if (!f || !kind?.taskOps) continue;
      const first = !this.held.has(id);
      this.held.add(id);
      const base = ops.length;
      const own = kind.taskOps(f, { task, fds, first }, {
        restore: this.ctx,
        serviceFd: (fileId, where) => serviceFd(this.get(fileId, where, task)),
        fdOf: (fileId) => byFile.get(fileId)?.[0],
        fileAt: (n) => byFd.get(n),
      });
      // A kind counts its swaps within its own list; the plan, in the task's.
      for (const op of own) {
        ops.push(
          op.op === OP.UNSWAP_FD && base ? { ...op, a: [op.a[0], Number(op.a[1]) + base] } : op,
        );
      }
    }
    return ops;
  }

  /** An fd opened later, once the root's mount tree exists (or at once,
   * when nothing is deferred): a placeholder until then. */
  later(open: () => number, task?: TaskCore): number {
    if (!this.deferring) return open();
    return this.defer(open, undefined, task);
  }

  /** A copy of ckpt's fd n above `min` (handed to a task as a service fd);
   * a copy of a placeholder gets the real file with it. */
  dupAbove(n: number, min = 100): number {
    const copy = fdops.dupAbove(n, min);
    this.byPlaceholder.get(n)?.copies.push(copy);
    return copy;
  }

  private defer(open: () => number, id: number | undefined, task?: TaskCore): number {
    const placeholder = fdops.open("/dev/null", O.RDONLY | O.CLOEXEC);
    const d = { placeholder, open, id, task, copies: [] };
    this.deferredOnes.push(d);
    this.byPlaceholder.set(placeholder, d);
    return placeholder;
  }

  private openOne(d: (typeof this.deferredOnes)[number]): number {
    if (d.real !== undefined) return d.real;
    const outer = this.task;
    if (d.task) this.task = d.task;
    try {
      d.real = d.open();
    } finally {
      this.task = outer;
    }
    return d.real;
  }

  /** The placeholders of deferred files (and their copies), in the order
   * openDeferred gives their files. */
  get placeholders(): number[] {
    return this.deferredOnes.flatMap((d) => [d.placeholder, ...d.copies]);
  }

  /** Opens the deferred files (the root's namespaces exist now), in the
   * order of `placeholders` (a file once per place it goes), for the caller
   * to send to the root. ckpt keeps them open until closeAll: what runs
   * before the tree does (queues refilled, beforeRun) acts on the real ones. */
  openDeferred(): number[] {
    const out: number[] = [];
    this.opening = true;
    try {
      for (const d of this.deferredOnes) {
        const n = this.openOne(d);
        for (let i = 0; i <= d.copies.length; i++) out.push(n);
      }
    } finally {
      this.opening = false;
      for (const d of this.deferredOnes) if (d.real !== undefined) this.kept.push(d.real);
    }
    return out;
  }

  /** Every task is restored and stopped; the tree is about to run. */
  beforeRun(): void {
    for (const fn of this.runners.splice(0)) fn();
  }

  closeAll(): void {
    fdops.closeAll([...this.fds.values(), ...this.kept]);
    for (const fn of this.closers.splice(0)) fn();
    this.fds.clear();
    this.kept.length = 0;
    this.locals.clear();
    this.runners.length = 0;
    this.deferredOnes.length = 0;
    this.byPlaceholder.clear();
  }

  private open(f: FileEntry, where: string): number {
    const kind = kindOf(f);
    if (!kind) throw new RestoreError(`${where}: file kind ${f.kind} cannot be restored`);
    const key = this.ctx.inherit.size ? kind.inheritKey?.(f) : undefined;
    const inherited = key ? this.ctx.inherit.get(key) : undefined;
    if (inherited !== undefined) {
      log.info(`${where}: using inherited fd ${inherited} for ${key}`);
      return fdops.dupAbove(inherited, 100);
    }
    // A file the tree had from outside its own mounts is found by ckpt's path.
    const open = () =>
      f.hostPath
        ? withHostPaths(() => kind.open(f, this.ctx, where))
        : kind.open(f, this.ctx, where);
    const late = this.deferring || kind.deferred?.(f) || (this.deferNetwork && kind.network);
    if (!this.opening && late) {
      return this.defer(open, f.id, this.task);
    }
    return open();
  }
}
