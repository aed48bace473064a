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
import { verifyImages } from "../images/verify.ts";
import { readChain, verifyChain } from "../images/chain.ts";
import { checkedWhileCopying } from "../restore/memory.ts";
import {
  restore as restoreEngine,
  type Restored,
  type RestoreOptions as EngineRestoreOptions,
} from "../restore/restore.ts";
import { Locks } from "../util/lock.ts";
import { checkTrust, untrustedPlace } from "../images/trust.ts";
import { log } from "../util/log.ts";
import { fd as fdops } from "../native/mod.ts";

export type { DumpOptions, DumpResult, PreDumpOptions, PreDumpResult, Restored };

export interface RestoreOptions extends EngineRestoreOptions {
  /** Restore images not owned by the caller or writable by others. */
  trustImages?: boolean;
}

export function dump(opts: DumpOptions): Promise<DumpResult> {
  // A dry run writes nothing: no directory is made or locked.
  const killing = !opts.leaveRunning && !opts.leaveStopped;
  const guarded = opts.dryRun ? { pid: opts.pid } : { ...opts, killing };
  return guardedDump(guarded, "dump", () => dumpEngine(opts));
}

export function preDump(opts: PreDumpOptions): Promise<PreDumpResult> {
  return guardedDump(opts, "pre-dump", () => preDumpEngine(opts));
}

/** mkdir -p with mode 0700 for what is new; returns the directories it
 * created, deepest last. An existing directory is left as it is, but one
 * restore will not trust is said now. */
function makeImagesDir(dir: string, killing: boolean): string[] {
  // Restore refuses images another user could have swapped: a dump that
  // would kill the tree is refused before anything happens (the process
  // would be lost to a default restore); one that lets it run warns.
  const untrusted = untrustedPlace(dir);
  if (untrusted && killing) {
    throw new DumpError(
      `${untrusted}; dump into a directory only you and root can change (or with -R, and ` +
        `restore with --trust-images)`,
    );
  }
  if (untrusted) log.warn(`${untrusted} unless given --trust-images`);
  const missing: string[] = [];
  for (let d = dir.replace(/\/+$/, "") || "/"; d && d !== "/" && d !== ".";) {
    try {
      Deno.lstatSync(d);
      break;
    } catch {
      missing.unshift(d);
      const up = d.slice(0, d.lastIndexOf("/"));
      d = up || "/";
    }
  }
  try {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    removeCreated(missing.filter((d) => exists(d)));
    throw new DumpError(`${dir}: cannot create the images directory: ${(err as Error).message}`);
  }
  return missing;
}

function exists(p: string): boolean {
  try {
    Deno.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Removes directories a failed dump created, deepest first, if empty. */
function removeCreated(dirs: string[]): void {
  for (const d of [...dirs].reverse()) {
    try {
      Deno.removeSync(d);
    } catch { /* not empty (someone else's files) or gone */ }
  }
}

/** Locks on the tree and the directory around a dump engine. */
async function guardedDump<T>(
  opts: { pid: number; dir?: string; killing?: boolean },
  what: string,
  engine: () => Promise<T>,
): Promise<T> {
  const locks = new Locks();
  let created: string[] = [];
  try {
    locks.pid(opts.pid, "dumping");
    // A dry run writes nothing, so it needs no directory.
    if (opts.dir !== undefined) {
      created = makeImagesDir(opts.dir, opts.killing ?? false);
      locks.dir(opts.dir);
    }
    // Alive at the start (not a zombie): if it is dead after a failure, it
    // died under the dump, and that is what the user hears.
    const existed = processExists(opts.pid) && !dead(opts.pid, 0);
    try {
      return await engine();
    } catch (err) {
      // What this dump created goes again (the engine removed its files).
      locks.release();
      removeCreated(created);
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

export async function restore(given: RestoreOptions): Promise<Restored & { verifyMs: number }> {
  const t0 = performance.now();
  // The checks hold for the directory's real path: use it from now on.
  const opts = given.trustImages ? given : { ...given, dir: checkTrust(given.dir) };
  const locks = new Locks();
  try {
    locks.dir(opts.dir);
    // Runs copied in by the fill workers or served lazily are checked as
    // they are copied: for a lazy restore that keeps reading the whole
    // pages file out of the time until the tree runs.
    // ckpt's fd table is grown for the images' descriptors while they are
    // checked: that growth waits for an RCU grace period.
    let reserved: Promise<void> | undefined;
    const checked = await verifyImages(
      opts.dir,
      (t) =>
        t.pagemap && t.mm ? checkedWhileCopying(t.mm.vmas, t.pagemap.runs, !!opts.lazyPages) : [],
      (n) => reserved = fdops.reserveSoon(n),
    );
    // Pages kept in parent images (--prev-images-dir) are checked up front.
    const chain = readChain(
      opts.dir,
      checked.inv,
      opts.trustImages
        ? undefined
        : (p) => checkTrust(p, `the parent images ${p} (--prev-images-dir)`),
    );
    await verifyChain(chain);
    const verifyMs = performance.now() - t0;
    for (const pid of checked.inv.pids) locks.pid(pid, "restoring");
    const tEngine = performance.now();
    const r = await restoreEngine(opts, { ...checked, chain, reserved });
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
