// Restore half of cgroups. Before anything is forked: each recorded cgroup
// mapped to where it goes now, checked against the rules below, made when
// missing and given its settings as --manage-cgroups says. Then each task and
// thread is moved into its cgroups at its first ptrace stop — it exists and
// has run none of its own code: the root before it forks, a child before it
// maps its memory (which is then charged to its own memory cgroup), a thread
// before the restorer lets it go. Settings that would refuse the restore's
// own forks (pids.max) and freezing come last, just before the tree runs.
//
// Where a cgroup goes (as in CRIU): with --cgroup-root for its hierarchy, the
// tree's root cgroup becomes that one and the rest keep their places below
// it; else each keeps its path — but a tree that was wholly in the dumping
// ckpt's own cgroup of a hierarchy stays in the restoring ckpt's.
//
// What an image may do (it is data: a hostile one must not let a task escape
// its limits): ckpt makes cgroups, writes settings, owners and modes only
// strictly below its own cgroup or at or below a --cgroup-root the operator
// gave — places whose every ancestor's limits still apply, and never ckpt's
// own cgroup or an ancestor of it. It moves a task only there, or into its
// own cgroup, or, for a task whose dumped effective uid is 0 (which could move
// itself anywhere once running), into a cgroup that exists already. Anything
// else is refused before anything is forked, naming the --cgroup-root that
// would allow it. Settings are only those of the hierarchy's controllers,
// never a file that moves or kills tasks or runs a program (props.ts); paths
// are resolved beneath the hierarchy's mount (hierarchy.ts).
import type {
  CgroupDir,
  CgroupHierarchy,
  CgroupProp,
  CgroupsImage,
  TaskCore,
} from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { errnoText, NativeError } from "../native/mod.ts";
import { log } from "../util/log.ts";
import {
  CgroupFs,
  hierarchyMounts,
  isV2,
  join,
  readMembership,
  relativeTo,
  shown,
  tryMembership,
  under,
} from "./hierarchy.ts";
import { type CgroupRoot, type ManageMode, rootFor } from "./options.ts";
import { type PropStage, stageOf, writesFor } from "./props.ts";

export interface CgroupRestoreOptions {
  /** --manage-cgroups (default soft). */
  mode?: ManageMode;
  /** --cgroup-root. */
  roots?: CgroupRoot[];
}

const EOPNOTSUPP = 95;

type Place = "managed" | "own" | "above" | "foreign";

interface DirPlan {
  path: string;
  create: boolean;
  write: boolean;
  dir: CgroupDir;
}

interface HierarchyPlan {
  index: number;
  h: CgroupHierarchy;
  fs: CgroupFs;
  dirs: DirPlan[];
}

export class CgroupRestore {
  private readonly created: { fs: CgroupFs; path: string }[] = [];

  private constructor(
    private readonly plans: HierarchyPlan[],
    /** Per set (index set-1), per hierarchy index: where it goes. */
    private readonly targets: string[][],
    private readonly who: Map<number, { pid: number; set: number; thread: boolean }>,
    readonly mode: ManageMode,
  ) {}

  /** Nothing to do: no image, ignore, or every task stays in ckpt's own. */
  get active(): boolean {
    return this.plans.length > 0;
  }

  static none(): CgroupRestore {
    return new CgroupRestore([], [], new Map(), "ignore");
  }

  /** Maps and checks everything; throws RestoreError before anything is
   * made when the image asks for what is not allowed or not possible. */
  static plan(
    img: CgroupsImage | undefined,
    cores: TaskCore[],
    opts: CgroupRestoreOptions = {},
  ): CgroupRestore {
    const mode = opts.mode ?? "soft";
    if (!img || mode === "ignore" || img.hierarchies.length === 0) return CgroupRestore.none();
    const own = readMembership("self");
    const mounts = hierarchyMounts();
    const roots = opts.roots ?? [];
    const targets = img.sets.map(() => [] as string[]);
    const plans: HierarchyPlan[] = [];
    const places: Place[][] = img.sets.map(() => []);
    try {
      img.hierarchies.forEach((h, k) => {
        const newRoot = rootFor(roots, h.name);
        const here = own.get(h.name);
        const map = (p: string): string =>
          newRoot === undefined ? p : join(newRoot, relativeTo(p, h.root));
        const place = (m: string): Place => {
          if (newRoot !== undefined && under(m, newRoot)) return "managed";
          if (here === undefined) return "foreign";
          if (m === here) return "own";
          if (under(m, here)) return "managed";
          return under(here, m) ? "above" : "foreign";
        };
        // A tree that was wholly in the dumping ckpt's cgroup of this
        // hierarchy stays in the restoring ckpt's, whatever this kernel has.
        const inherited = img.sets.every((s) => s.paths[k] === h.own) &&
          h.dirs.every((d) => d.path === h.own);
        img.sets.forEach((s, i) => {
          targets[i][k] = map(s.paths[k]);
          places[i][k] = inherited && newRoot === undefined ? "own" : place(targets[i][k]);
        });
        const dirs = h.dirs.map((d) => ({ d, path: map(d.path) }));
        // Nothing to make and every task stays where restore puts it anyway.
        const idle = targets.every((t) => t[k] === here) &&
          dirs.every(({ path }) => place(path) === "own" || place(path) === "above");
        if ((idle || inherited) && newRoot === undefined) return;
        if (here === undefined) {
          throw new RestoreError(
            `the tree was in cgroups of the ${shown(h.name)} hierarchy, which this kernel ` +
              `does not have as such (here: ${[...own.keys()].map(shown).join("; ")}); restore ` +
              `with --manage-cgroups=ignore to leave the tree in ckpt's cgroups`,
          );
        }
        const fs = CgroupFs.open(h.name, mounts);
        if (!fs) {
          throw new RestoreError(
            `the ${shown(h.name)} cgroup hierarchy is not mounted here; mount it, or restore ` +
              `with --manage-cgroups=ignore`,
          );
        }
        plans.push({ index: k, h, fs, dirs: [] });
        const plan = plans[plans.length - 1];
        for (const { d, path } of dirs) {
          plan.dirs.push(planDir(fs, h, d, path, place(path), mode, here, newRoot));
        }
      });
      checkPlacement(img, cores, targets, places, own);
    } catch (err) {
      for (const p of plans) p.fs.close();
      throw err;
    }
    const who = new Map<number, { pid: number; set: number; thread: boolean }>();
    for (const c of cores) {
      if (!c.cgroupSet) continue;
      if (c.zombie && places[c.cgroupSet - 1].some((p) => p === "foreign" || p === "above")) {
        continue;
      }
      who.set(c.pid, { pid: c.pid, set: c.cgroupSet, thread: false });
      for (const th of c.threads) {
        if (th.tid === c.pid) continue;
        who.set(th.tid, { pid: c.pid, set: th.cgroupSet || c.cgroupSet, thread: true });
      }
    }
    if (plans.length === 0) return CgroupRestore.none();
    const made = plans.reduce((a, p) => a + p.dirs.filter((d) => d.create).length, 0);
    log.debug(
      `cgroups (${mode}): ${plans.map((p) => shown(p.h.name)).join(", ")}; ${made} to make`,
    );
    return new CgroupRestore(plans, targets, who, mode);
  }

  /** Makes the missing cgroups and writes their settings, parents first;
   * before anything is forked. */
  prepare(): void {
    for (const p of this.plans) {
      for (const d of p.dirs) {
        if (d.create) {
          try {
            p.fs.mkdir(d.path);
          } catch (err) {
            throw new RestoreError(
              `making cgroup ${p.fs.where(d.path)} failed: ${(err as Error).message}`,
            );
          }
          this.created.push({ fs: p.fs, path: d.path });
          log.debug(`made cgroup ${p.fs.where(d.path)}`);
        }
        if (!d.write) continue;
        this.perms(p, d);
        this.writeStage(p, d, "creation");
      }
    }
    for (const p of this.plans) {
      for (const d of p.dirs) if (d.write) this.writeStage(p, d, "normal");
    }
  }

  /** At a task's or thread's first stop: into its cgroups. */
  firstStop(tid: number, dumped = tid): void {
    const w = this.who.get(dumped);
    if (!w) return;
    // In a user namespace of the tree's own, tasks other than the root get
    // other pids here than they were dumped with: /proc/TID is that task.
    const now = dumped === tid
      ? tryMembership(w.pid, w.thread ? tid : undefined)
      : tryMembership(tid);
    if (!now) return; // gone: the supervisor reports it
    const targets = this.targets[w.set - 1];
    for (const p of this.plans) {
      const target = targets[p.index];
      if (now.get(p.h.name) === target) continue;
      const file = !w.thread ? "cgroup.procs" : isV2(p.h.name) ? "cgroup.threads" : "tasks";
      try {
        p.fs.write(target, file, String(tid));
      } catch (err) {
        const what = w.thread ? `thread ${tid} of pid ${w.pid}` : `pid ${tid}`;
        throw new RestoreError(
          `moving ${what} into cgroup ${p.fs.where(target)} failed: ${why(err)}`,
        );
      }
    }
  }

  /** Every task is in place: the settings that come last. */
  beforeRun(): void {
    for (const p of this.plans) for (const d of p.dirs) if (d.write) this.writeStage(p, d, "last");
  }

  /** After a failed restore (its tasks killed and reaped): the cgroups it
   * made go again, children first. */
  undo(): void {
    for (const { fs, path } of this.created.splice(0).reverse()) {
      try {
        fs.rmdir(path);
      } catch (err) {
        log.warn(`could not remove cgroup ${fs.where(path)} made by the restore: ${why(err)}`);
      }
    }
  }

  close(): void {
    for (const p of this.plans) p.fs.close();
    this.plans.length = 0;
  }

  private perms(p: HierarchyPlan, d: DirPlan): void {
    const set = (file: string | undefined, want: { mode: number; uid: number; gid: number }) => {
      const st = p.fs.stat(d.path, file);
      if (!st || (st.mode === want.mode && st.uid === want.uid && st.gid === want.gid)) return;
      try {
        p.fs.setPerms(d.path, file, want);
      } catch (err) {
        throw new RestoreError(
          `giving ${p.fs.where(d.path, file)} owner ${want.uid}:${want.gid} and mode ${
            want.mode.toString(8)
          } failed: ${why(err)}`,
        );
      }
    };
    set(undefined, d.dir);
    for (const f of d.dir.files) set(f.name, f);
  }

  private writeStage(p: HierarchyPlan, d: DirPlan, stage: PropStage): void {
    for (const prop of d.dir.props) {
      if (stageOf(prop.name) !== stage) continue;
      for (const w of writesFor(prop.name, prop.value)) this.writeOne(p, d.path, prop, w);
    }
  }

  private writeOne(
    p: HierarchyPlan,
    path: string,
    prop: CgroupProp,
    w: { file: string; value: string },
  ): void {
    try {
      p.fs.write(path, w.file, w.value);
    } catch (err) {
      // A setting this kernel no longer takes (deprecated knobs): as CRIU.
      if (err instanceof NativeError && err.errno === EOPNOTSUPP) {
        log.warn(`cgroup ${p.fs.where(path)}: ${w.file} is not supported here; left as it is`);
        return;
      }
      throw new RestoreError(
        `cgroup ${p.fs.where(path)}: setting ${prop.name} to ${
          JSON.stringify(prop.value.slice(0, 80))
        } failed: ${why(err)}; restore with --manage-cgroups=none to leave settings alone`,
      );
    }
  }
}

function planDir(
  fs: CgroupFs,
  h: CgroupHierarchy,
  dir: CgroupDir,
  path: string,
  place: Place,
  mode: ManageMode,
  here: string,
  newRoot: string | undefined,
): DirPlan {
  const where = fs.where(path);
  const exists = fs.exists(path);
  const rootOpt = newRoot !== undefined ? `--cgroup-root ${cgRootName(h.name)}${h.root}` : "";
  if (place === "own" || place === "above") return { path, create: false, write: false, dir };
  if (place === "foreign") {
    const hint = `ckpt makes and sets cgroups only below its own (${here}) or below a ` +
      `--cgroup-root; restore with --cgroup-root ${
        cgRootName(h.name)
      }${h.root} to put the tree there`;
    if (!exists) throw new RestoreError(`cgroup ${where} is missing; ${hint}`);
    if (mode === "strict") throw new RestoreError(`cgroup ${where} exists already; ${hint}`);
    if ((mode === "props" || mode === "full") && dir.props.length) {
      throw new RestoreError(`cgroup ${where}: its settings cannot be restored; ${hint}`);
    }
    return { path, create: false, write: false, dir };
  }
  if (!exists && (mode === "none" || mode === "props")) {
    throw new RestoreError(
      `cgroup ${where} is missing (--manage-cgroups=${mode} makes no cgroup: create it, or ` +
        `restore with --manage-cgroups=soft)`,
    );
  }
  if (exists && mode === "strict") {
    throw new RestoreError(
      `cgroup ${where} exists already (--manage-cgroups=strict makes every cgroup anew${
        rootOpt ? `; ${rootOpt} names it` : ""
      }): remove it, or restore with --manage-cgroups=soft`,
    );
  }
  const create = !exists;
  const write = create || mode === "props" || mode === "full";
  return { path, create, write, dir };
}

/** Every task and thread may go where its set says (see the module's
 * comment), or the restore is refused now. */
function checkPlacement(
  img: CgroupsImage,
  cores: TaskCore[],
  targets: string[][],
  places: Place[][],
  own: Map<string, string>,
): void {
  const check = (c: TaskCore, set: number, who: string) => {
    if (!set || c.zombie) return; // a zombie runs nothing: it goes where allowed
    const privileged = c.creds?.uids[1] === 0;
    img.hierarchies.forEach((h, k) => {
      const place = places[set - 1][k];
      if (place === "managed" || place === "own" || privileged) return;
      const target = targets[set - 1][k];
      throw new RestoreError(
        `${who} (uid ${c.creds?.uids[1] ?? "?"}) was in ${shown(h.name)} cgroup ${target}, ` +
          `outside ckpt's own (${own.get(h.name) ?? "none"}): an image can put a task there ` +
          `only if it ran as root; restore with --cgroup-root ${cgRootName(h.name)}${h.root} ` +
          `to allow it`,
      );
    });
  };
  for (const c of cores) {
    check(c, c.cgroupSet, `pid ${c.pid}`);
    for (const th of c.threads) {
      if (th.tid !== c.pid && th.cgroupSet) check(c, th.cgroupSet, `thread ${th.tid}`);
    }
  }
}

/** The CONTROLLER: part of a --cgroup-root for hierarchy name. */
function cgRootName(name: string): string {
  return isV2(name) ? "cgroup2:" : `${name.split(",")[0]}:`;
}

function why(err: unknown): string {
  return err instanceof NativeError ? errnoText(err.errno) : (err as Error).message;
}
