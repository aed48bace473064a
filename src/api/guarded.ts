// dump and restore as the CLI and mod.ts offer them: the engines in
// src/dump/dump.ts and src/restore/restore.ts wrapped in what makes running
// them safe — locks against a second ckpt on the same tree or directory, and
// for restore the trust check and the integrity check of the images (every
// file's CRC32C, bounds) before anything is forked. A page run's CRC32C is
// checked then too, unless the restore checks it before copying it in (fill
// workers, the lazy page server): no page reaches a task unchecked.
import { dump as dumpEngine, type DumpOptions, type DumpResult } from "../dump/dump.ts";
import { DumpError } from "../errors.ts";
import {
  preDump as preDumpEngine,
  type PreDumpOptions,
  type PreDumpResult,
} from "../dump/pre_dump.ts";
import { dead } from "../dump/freeze.ts";
import { processExists } from "../proc/read.ts";
import { checkTrust } from "../images/trust.ts";
import { verifyImages } from "../images/verify.ts";
import { readChain, verifyChain } from "../images/chain.ts";
import { checkedWhileCopying } from "../restore/memory.ts";
import {
  restore as restoreEngine,
  type Restored,
  type RestoreOptions as EngineRestoreOptions,
} from "../restore/restore.ts";
import { Locks } from "../util/lock.ts";

export type { DumpOptions, DumpResult, PreDumpOptions, PreDumpResult, Restored };

export interface RestoreOptions extends EngineRestoreOptions {
  /** Restore images not owned by the caller or writable by others. */
  trustImages?: boolean;
}

export function dump(opts: DumpOptions): Promise<DumpResult> {
  // A dry run writes nothing: no directory is made or locked.
  const guarded = opts.dryRun ? { pid: opts.pid } : opts;
  return guardedDump(guarded, "dump", () => dumpEngine(opts));
}

export function preDump(opts: PreDumpOptions): Promise<PreDumpResult> {
  return guardedDump(opts, "pre-dump", () => preDumpEngine(opts));
}

/** Locks on the tree and the directory around a dump engine. */
async function guardedDump<T>(
  opts: { pid: number; dir?: string },
  what: string,
  engine: () => Promise<T>,
): Promise<T> {
  const locks = new Locks();
  try {
    locks.pid(opts.pid, "dumping");
    if (opts.dir !== undefined) {
      try {
        Deno.mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
      } catch (err) {
        throw new DumpError(
          `${opts.dir}: cannot create the images directory: ${(err as Error).message}`,
        );
      }
      locks.dir(opts.dir);
    }
    const existed = processExists(opts.pid);
    try {
      return await engine();
    } catch (err) {
      // Whatever call noticed first (ptrace, /proc, an injected syscall),
      // a process that died under the dump is reported as that.
      if (existed && !(err instanceof DumpError && /exited during/.test(err.message))) {
        if (dead(opts.pid)) {
          throw new DumpError(`pid ${opts.pid} exited during the ${what}; nothing was saved`);
        }
      }
      throw err;
    }
  } finally {
    locks.release();
  }
}

export async function restore(opts: RestoreOptions): Promise<Restored & { verifyMs: number }> {
  const t0 = performance.now();
  if (!opts.trustImages) checkTrust(opts.dir);
  const locks = new Locks();
  try {
    locks.dir(opts.dir);
    // Runs copied in by the fill workers or served lazily are checked as
    // they are copied: for a lazy restore that keeps reading the whole
    // pages file out of the time until the tree runs.
    const checked = await verifyImages(
      opts.dir,
      (t) =>
        t.pagemap && t.mm ? checkedWhileCopying(t.mm.vmas, t.pagemap.runs, !!opts.lazyPages) : [],
    );
    // Pages kept in parent images (--prev-images-dir) are checked up front.
    const chain = readChain(opts.dir, checked.inv);
    await verifyChain(chain);
    const verifyMs = performance.now() - t0;
    for (const pid of checked.inv.pids) locks.pid(pid, "restoring");
    const tEngine = performance.now();
    const r = await restoreEngine(opts, { ...checked, chain });
    // The whole restore, checks included: that is what a user waits for.
    return {
      ...r,
      ms: performance.now() - t0,
      firstInstructionMs: r.firstInstructionMs + (tEngine - t0),
      verifyMs,
    };
  } finally {
    locks.release();
  }
}
