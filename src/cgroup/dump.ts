// Dump half of cgroups: while the tree is frozen, which cgroup of every
// hierarchy each task and thread is in (a "set"), the tree's root cgroup per
// hierarchy (where --cgroup-root points, or the deepest cgroup holding every
// member), and every cgroup from that root down to each member with its
// settings, owner and mode — what restore needs to make them again.
import { create } from "@bufbuild/protobuf";
import {
  type CgroupDir,
  CgroupDirSchema,
  CgroupFilePermSchema,
  CgroupHierarchySchema,
  CgroupPropSchema,
  CgroupSetSchema,
  type CgroupsImage,
  CgroupsImageSchema,
} from "../gen/ckpt/images_pb.ts";
import type { Blocker } from "../files/collect.ts";
import { log } from "../util/log.ts";
import { readStatus, statusInts } from "../proc/status.ts";
import {
  CgroupFs,
  commonAncestor,
  hierarchyMounts,
  isV2,
  type Membership,
  names,
  parentOf,
  readMembership,
  shown,
  tryMembership,
  under,
  validPath,
} from "./hierarchy.ts";
import { type CgroupRoot, type ManageMode, rootFor } from "./options.ts";
import { PropTable, recordedValue } from "./props.ts";

export interface CgroupDumpOptions {
  /** --manage-cgroups: ignore records nothing. */
  mode?: ManageMode;
  /** --cgroup-dump-controller: only these hierarchies. */
  controllers?: string[];
  /** --cgroup-root on dump: the tree's root cgroup, where given. */
  roots?: CgroupRoot[];
  /** --cgroup-props / --cgroup-props-file. */
  props?: string;
  /** --freeze-cgroup: the cgroup ckpt froze and the state it had before,
   * recorded instead of ckpt's own freezing. */
  frozen?: { hierarchy: string; path: string; wasFrozen: boolean };
}

/** Files through which a cgroup is delegated to a user (cgroup v2's
 * delegation model; v1 the same by convention). */
const DELEGATION = ["cgroup.procs", "cgroup.threads", "tasks", "cgroup.subtree_control"];

export interface CgroupTask {
  pid: number;
  tids: number[];
  zombie: boolean;
}

export class CgroupCollector {
  private readonly sets = new Map<string, number>();
  private readonly setPaths: string[][] = [];
  private readonly taskSet = new Map<number, number>();
  private readonly threadSet = new Map<number, number>();
  private hierarchies: string[] = [];
  private img: CgroupsImage | undefined;

  constructor(
    private readonly opts: CgroupDumpOptions = {},
    /** hierarchyMounts(), when the caller has it already. */
    private mounts?: Map<string, string>,
  ) {}

  /** The set of task pid (its leader), 0 when none was recorded. */
  setOf(pid: number): number {
    return this.taskSet.get(pid) ?? 0;
  }

  /** The set of a thread when not its task's, else 0. */
  setOfThread(tid: number): number {
    return this.threadSet.get(tid) ?? 0;
  }

  get image(): CgroupsImage | undefined {
    return this.img;
  }

  /** Reads every membership and the cgroups they need; what cannot be
   * recorded comes back as blockers. */
  collect(tree: CgroupTask[]): Blocker[] {
    if (this.opts.mode === "ignore") return [];
    const t0 = performance.now();
    const own = readMembership("self");
    const members = new Map<number, Membership>();
    for (const t of tree) {
      const m = tryMembership(t.pid);
      if (!m) continue; // gone meanwhile: the dump notices elsewhere
      members.set(t.pid, m);
      if (t.zombie) continue;
      for (const tid of t.tids.slice(1)) {
        const mt = tryMembership(t.pid, tid);
        if (mt) members.set(tid, mt);
      }
    }
    const blockers: Blocker[] = [];
    const wanted = this.opts.controllers ?? [];
    this.hierarchies = [...own.keys()].filter((h) =>
      wanted.length === 0 || wanted.some((c) => names(h, c))
    );
    for (const c of wanted) {
      if (!this.hierarchies.some((h) => names(h, c))) {
        blockers.push({
          pid: tree[0].pid,
          kind: "cgroup",
          message: `--cgroup-dump-controller ${c}: no such cgroup hierarchy here`,
        });
      }
    }
    const props = PropTable.of(this.opts.props);
    const hierarchies = [];
    for (const h of this.hierarchies) {
      const paths = [...members.entries()].map(([who, m]) => ({ who, path: m.get(h) }));
      for (const { who, path } of paths) {
        if (path === undefined || !validPath(path)) {
          blockers.push({
            pid: who,
            kind: "cgroup",
            message: `pid ${who} is in cgroup ${JSON.stringify(path ?? "?")} of the ${
              shown(h)
            } hierarchy, which ckpt cannot record; dump with --manage-cgroups=ignore`,
          });
        }
      }
      const ok = paths.map((p) => p.path).filter((p): p is string => !!p && validPath(p));
      const given = this.opts.roots ? rootFor(this.opts.roots, h) : undefined;
      const root = given ?? commonAncestor(ok);
      if (given) {
        for (const { who, path } of paths) {
          if (path && !under(path, given)) {
            blockers.push({
              pid: who,
              kind: "cgroup",
              message: `pid ${who} is in ${
                shown(h)
              } cgroup ${path}, not below --cgroup-root ${given}`,
            });
          }
        }
      }
      const ownPath = own.get(h)!;
      // A hierarchy the whole tree shares with ckpt needs no look inside.
      const inherited = ok.every((p) => p === ownPath) && root === ownPath;
      const fs = inherited ? undefined : CgroupFs.open(h, this.mounts ??= hierarchyMounts());
      if (!fs && !inherited) {
        blockers.push({
          pid: tree[0].pid,
          kind: "cgroup",
          message:
            `the tree is in cgroups of the ${
              shown(h)
            } hierarchy, which is not mounted here: mount it, or leave it out with ` +
            `--cgroup-dump-controller naming the others`,
        });
        continue;
      }
      try {
        hierarchies.push(create(CgroupHierarchySchema, {
          name: h,
          own: ownPath,
          root,
          dirs: this.dirs(h, fs, root, ok, ownPath, props),
        }));
      } finally {
        fs?.close();
      }
      this.warnOutside(h, tree, members, ownPath, root);
    }
    if (blockers.length) return blockers;
    for (const t of tree) {
      const m = members.get(t.pid);
      if (!m) continue;
      this.taskSet.set(t.pid, this.setFor(m));
      for (const tid of t.zombie ? [] : t.tids.slice(1)) {
        const mt = members.get(tid);
        const s = mt ? this.setFor(mt) : 0;
        if (s !== this.taskSet.get(t.pid)) this.threadSet.set(tid, s);
      }
    }
    this.img = create(CgroupsImageSchema, {
      hierarchies,
      sets: this.setPaths.map((paths) => create(CgroupSetSchema, { paths })),
    });
    log.debug(
      `cgroups: ${hierarchies.length} hierarchies, ${this.setPaths.length} set(s), ${
        hierarchies.reduce((a, h) => a + h.dirs.length, 0)
      } cgroup(s) recorded in ${(performance.now() - t0).toFixed(1)} ms`,
    );
    return [];
  }

  private setFor(m: Membership): number {
    const paths = this.hierarchies.map((h) => m.get(h) ?? "/");
    const key = paths.join("\0");
    let id = this.sets.get(key);
    if (id === undefined) {
      this.setPaths.push(paths);
      id = this.setPaths.length;
      this.sets.set(key, id);
    }
    return id;
  }

  /** The root and every cgroup between it and each member, parents first.
   * The cgroups ckpt itself is in (and those above) are listed without
   * settings: restore never writes them. */
  private dirs(
    h: string,
    fs: CgroupFs | undefined,
    root: string,
    members: string[],
    own: string,
    props: PropTable,
  ): CgroupDir[] {
    const all = new Set<string>([root]);
    for (const p of members) {
      for (let q = p; q !== root && under(q, root); q = parentOf(q)) all.add(q);
    }
    const order = [...all].sort((a, b) => depth(a) - depth(b) || (a < b ? -1 : 1));
    return order.map((path) => {
      if (!fs || under(own, path)) return create(CgroupDirSchema, { path, mode: 0o755 });
      const st = fs.stat(path) ?? { mode: 0o755, uid: 0, gid: 0 };
      const files = DELEGATION.flatMap((name) => {
        const f = name === "tasks" && isV2(h) || name.startsWith("cgroup.threads") && !isV2(h)
          ? undefined
          : fs.stat(path, name);
        return f && (f.uid !== 0 || f.gid !== 0)
          ? [create(CgroupFilePermSchema, { name, ...f })]
          : [];
      });
      return create(CgroupDirSchema, {
        path,
        ...st,
        files,
        props: path === "/" ? [] : this.props(h, fs, path, props),
      });
    });
  }

  private props(h: string, fs: CgroupFs, path: string, table: PropTable) {
    const out = [];
    const here = fs.list(path);
    for (const name of table.names(h)) {
      if (!here.has(name)) continue;
      const v = fs.read(path, name);
      if (v === undefined) continue;
      out.push(create(CgroupPropSchema, { name, value: recordedValue(name, v) }));
    }
    const fz = this.opts.frozen;
    const ours = fz && fz.hierarchy === h && under(path, fz.path);
    if (h.split(",").includes("freezer")) {
      // Its own state, not its ancestors': self_freezing.
      const self = fs.read(path, "freezer.self_freezing");
      const frozen = ours && path === fz.path ? fz.wasFrozen : self === "1";
      out.push(
        create(CgroupPropSchema, { name: "freezer.state", value: frozen ? "FROZEN" : "THAWED" }),
      );
    }
    if (isV2(h)) {
      const self = fs.read(path, "cgroup.freeze");
      const frozen = ours && path === fz.path ? fz.wasFrozen : self === "1";
      if (self !== undefined) {
        out.push(create(CgroupPropSchema, { name: "cgroup.freeze", value: frozen ? "1" : "0" }));
      }
    }
    return out;
  }

  /** A task of another user outside ckpt's own cgroup is restored there only
   * if the operator says so (--cgroup-root): say it now. */
  private warnOutside(
    h: string,
    tree: CgroupTask[],
    members: Map<number, Membership>,
    own: string,
    root: string,
  ): void {
    for (const t of tree) {
      const p = members.get(t.pid)?.get(h);
      if (!p || under(p, own) || t.zombie) continue;
      const euid = euidOf(t.pid);
      if (euid === undefined || euid === 0) continue;
      log.warn(
        `pid ${t.pid} (uid ${euid}) is in ${shown(h)} cgroup ${p}, outside ckpt's own (${own}): ` +
          `restore will move it there only with --cgroup-root ${
            isV2(h) ? "cgroup2:" : `${h.split(",")[0]}:`
          }${root} (or from a ckpt in a cgroup that holds it)`,
      );
      return;
    }
  }
}

function euidOf(pid: number): number | undefined {
  try {
    return statusInts(readStatus(pid), "Uid")[1];
  } catch {
    return undefined;
  }
}

function depth(p: string): number {
  return p === "/" ? 0 : p.split("/").length - 1;
}
