// --freeze-cgroup: freezing a tree through the cgroup freezer (v1
// freezer.state, v2 cgroup.freeze) so that nothing in it can fork while it
// is seized: every thread of the cgroup and its descendants is seized and
// interrupted while frozen, then the cgroup is thawed (each thread stops in
// ptrace as it wakes) and given back the state it had once the dump is over.
// Also: whether a task is held by a freezer, whose frozen tasks would never
// reach the ptrace stop a plain dump waits for.
import { DumpError } from "../errors.ts";
import type { Frozen } from "../dump/freeze.ts";
import { sleepSync } from "../util/sleep.ts";
import { log } from "../util/log.ts";
import {
  CgroupFs,
  hierarchyMounts,
  isV2,
  join,
  nameKey,
  readMembership,
  shown,
  tryMembership,
  under,
} from "./hierarchy.ts";

const FREEZE_TIMEOUT_MS = 10_000;

export class CgroupFreezer {
  private frozenByUs = false;

  private constructor(
    private readonly fs: CgroupFs,
    /** The hierarchy's name ("freezer…" or "" for v2). */
    readonly hierarchy: string,
    /** The cgroup, as a path in its hierarchy. */
    readonly path: string,
    /** It was frozen before ckpt came: it is left frozen. */
    readonly wasFrozen: boolean,
  ) {}

  /** The cgroup at filesystem path `dir`, as runc passes it (a v1 freezer
   * cgroup or a v2 cgroup). */
  static open(dir: string): CgroupFreezer {
    let real: string;
    try {
      real = Deno.realPathSync(dir);
    } catch (err) {
      throw new DumpError(`--freeze-cgroup ${dir}: ${(err as Error).message}`);
    }
    const mounts = [...hierarchyMounts()].filter(([k, m]) =>
      (k === "" || k.split(",").includes("freezer")) && (real === m || real.startsWith(`${m}/`))
    ).sort((a, b) => b[1].length - a[1].length);
    if (!mounts.length) {
      throw new DumpError(
        `--freeze-cgroup ${dir} is neither a v1 freezer cgroup nor a cgroup v2 cgroup`,
      );
    }
    const [key, mount] = mounts[0];
    const name = [...readMembership("self").keys()].find((h) => nameKey(h) === key) ?? key;
    const path = real === mount ? "/" : real.slice(mount.length);
    const fs = CgroupFs.at(name, mount);
    const state = isV2(name) ? fs.read(path, "cgroup.freeze") : fs.read(path, "freezer.state");
    if (state === undefined || (isV2(name) && path === "/")) {
      fs.close();
      throw new DumpError(`--freeze-cgroup ${dir}: this cgroup cannot be frozen`);
    }
    return new CgroupFreezer(fs, name, path, state === "1" || state === "FROZEN");
  }

  /** pid must be in the cgroup (or below), and ckpt must not be. */
  checkHolds(pid: number): void {
    const where = tryMembership(pid)?.get(this.hierarchy);
    if (where === undefined || !under(where, this.path)) {
      throw new DumpError(
        `pid ${pid} is not in --freeze-cgroup ${this.fs.where(this.path)} (it is in ${
          shown(this.hierarchy)
        } cgroup ${where ?? "?"})`,
      );
    }
    const own = readMembership("self").get(this.hierarchy);
    if (own !== undefined && under(own, this.path)) {
      throw new DumpError(`ckpt itself is in --freeze-cgroup ${this.fs.where(this.path)}`);
    }
  }

  /** Freezes the cgroup and waits until every task in it is frozen. */
  freeze(): void {
    const t0 = performance.now();
    this.write(true);
    this.frozenByUs = true;
    for (let i = 0;; i++) {
      if (this.isFrozen()) break;
      if (performance.now() - t0 > FREEZE_TIMEOUT_MS) {
        this.thaw();
        throw new DumpError(
          `--freeze-cgroup ${this.fs.where(this.path)} did not freeze within ${
            FREEZE_TIMEOUT_MS / 1000
          } s (a task in uninterruptible sleep?); it was thawed, nothing was dumped`,
        );
      }
      sleepSync(i < 50 ? 0.1 : 1);
    }
    log.debug(
      `froze cgroup ${this.fs.where(this.path)} in ${(performance.now() - t0).toFixed(1)} ms`,
    );
  }

  /** Thaws it: the seized threads wake into their ptrace stops. One frozen
   * before ckpt came is frozen again by restoreState. */
  thaw(): void {
    if (!this.frozenByUs) return;
    this.frozenByUs = false;
    try {
      this.write(false);
    } catch (err) {
      log.warn(`could not thaw cgroup ${this.fs.where(this.path)}: ${(err as Error).message}`);
    }
  }

  /** Gives it back the state it had before ckpt came: frozen again, if it
   * was (after a dump that let the tree go, or a failed one). */
  restoreState(): void {
    if (!this.wasFrozen) return;
    try {
      this.write(true);
      // Threads just let go take a moment to get frozen again.
      for (let i = 0; i < 1000 && !this.isFrozen(); i++) sleepSync(1);
    } catch (err) {
      log.warn(
        `could not freeze cgroup ${this.fs.where(this.path)} again: ${(err as Error).message}`,
      );
    }
  }

  /** Every thread in the cgroup and the cgroups below it. */
  tids(): number[] {
    const out: number[] = [];
    const walk = (path: string) => {
      const file = isV2(this.hierarchy) ? "cgroup.threads" : "tasks";
      for (const l of (this.fs.read(path, file) ?? "").split("\n")) if (l) out.push(Number(l));
      for (const e of Deno.readDirSync(this.fs.where(path))) {
        if (e.isDirectory) walk(join(path, e.name));
      }
    };
    walk(this.path);
    return [...new Set(out)];
  }

  close(): void {
    this.thaw();
    this.fs.close();
  }

  private write(frozen: boolean): void {
    if (isV2(this.hierarchy)) this.fs.write(this.path, "cgroup.freeze", frozen ? "1" : "0");
    else this.fs.write(this.path, "freezer.state", frozen ? "FROZEN" : "THAWED");
  }

  private isFrozen(): boolean {
    if (!isV2(this.hierarchy)) return this.fs.read(this.path, "freezer.state") === "FROZEN";
    return /^frozen 1$/m.test(this.fs.read(this.path, "cgroup.events") ?? "");
  }
}

/** The freezer cgroup that holds pid frozen (or freezing), if any: ptrace
 * cannot stop such a task until it is thawed. */
export function frozenCgroupOf(
  pid: number,
  mounts: Map<string, string> = hierarchyMounts(),
): string | undefined {
  const m = tryMembership(pid);
  if (!m) return undefined;
  for (const [h, path] of m) {
    const v2 = isV2(h);
    if (!v2 && !h.split(",").includes("freezer")) continue;
    const mount = mounts.get(nameKey(h));
    if (mount === undefined) continue;
    const dir = path === "/" ? mount : `${mount}${path}`;
    try {
      if (v2) {
        if (/^frozen 1$/m.test(Deno.readTextFileSync(`${dir}/cgroup.events`))) return dir;
      } else if (Deno.readTextFileSync(`${dir}/freezer.state`).trim() !== "THAWED") return dir;
    } catch { /* the root cgroup (no such file), or gone */ }
  }
  return undefined;
}

/** --freeze-cgroup: freezes the cgroup at `dir`, seizes every thread in it,
 * thaws it and collects their ptrace stops. The caller freezes the rest of
 * the tree (tasks outside the cgroup) as usual and, once the dump is over,
 * calls restoreState and close. */
export function freezeThrough(dir: string, root: number, frozen: Frozen): CgroupFreezer {
  const fz = CgroupFreezer.open(dir);
  try {
    fz.checkHolds(root);
    const t0 = performance.now();
    fz.freeze();
    const { seized, error } = frozen.seizeHeld(fz.tids());
    fz.thaw();
    frozen.awaitStops(seized);
    if (error) throw error;
    log.debug(
      `${seized.length} thread(s) of cgroup ${dir} seized through the freezer in ${
        (performance.now() - t0).toFixed(1)
      } ms`,
    );
    return fz;
  } catch (err) {
    fz.close();
    throw err;
  }
}
