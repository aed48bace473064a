// Cgroup properties: which files of a cgroup are its settings (CRIU's
// defaults per controller, plus what --cgroup-props adds), when each must be
// written at restore, and how a value read at dump is written back.
import { UsageError } from "../errors.ts";
import { isV2 } from "./hierarchy.ts";

/** CRIU's built-in lists (cgroup-props.c), with the v2 names of the same
 * settings; a file a cgroup does not have is skipped. */
export const DEFAULT_PROPS: Record<string, string[]> = {
  cpu: [
    "cpu.shares",
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "cpu.rt_period_us",
    "cpu.rt_runtime_us",
    "cpu.weight",
    "cpu.max",
    "cpu.max.burst",
    "cpu.idle",
  ],
  // limit_in_bytes before memsw.limit_in_bytes: the kernel wants them so.
  memory: [
    "memory.limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.swappiness",
    "memory.soft_limit_in_bytes",
    "memory.move_charge_at_immigrate",
    "memory.oom_control",
    "memory.use_hierarchy",
    "memory.kmem.limit_in_bytes",
    "memory.kmem.tcp.limit_in_bytes",
    "memory.min",
    "memory.low",
    "memory.high",
    "memory.max",
    "memory.swap.high",
    "memory.swap.max",
    "memory.oom.group",
  ],
  cpuset: [
    "cpuset.cpus",
    "cpuset.mems",
    "cpuset.memory_migrate",
    "cpuset.cpu_exclusive",
    "cpuset.mem_exclusive",
    "cpuset.mem_hardwall",
    "cpuset.memory_spread_page",
    "cpuset.memory_spread_slab",
    "cpuset.sched_load_balance",
    "cpuset.sched_relax_domain_level",
  ],
  blkio: ["blkio.weight"],
  io: ["io.weight"],
  freezer: [],
  perf_event: [],
  net_cls: ["net_cls.classid"],
  net_prio: ["net_prio.ifpriomap"],
  pids: ["pids.max"],
  devices: ["devices.list"],
  hugetlb: [],
};

/** Settings of every v1 cgroup, whatever its controllers. */
const V1_GLOBAL = ["cgroup.clone_children", "notify_on_release"];
/** cgroup v2's own settings. cgroup.type and cgroup.subtree_control come
 * first: a cgroup's children and tasks depend on them. */
const V2_CORE = [
  "cgroup.type",
  "cgroup.subtree_control",
  "cgroup.max.descendants",
  "cgroup.max.depth",
];

/** Properties written right after the cgroup is made, before its children
 * or any task: the kernel refuses them later (cpuset.cpus/mems empty, a
 * devices deny-all with children, cgroup.type or subtree_control with
 * tasks), or they decide what children inherit. */
const AT_CREATION = new Set([
  "cgroup.type",
  "cgroup.subtree_control",
  "cgroup.clone_children",
  "cpuset.cpus",
  "cpuset.mems",
  "devices.list",
  "memory.use_hierarchy",
  "memory.swappiness",
  "memory.oom_control",
  "memory.kmem.limit_in_bytes",
]);

/** Properties written once every task is in place, just before the tree
 * runs: restoring forks the tree's tasks in their parents' cgroups before
 * moving them (a pids.max set first could refuse such a fork the program
 * never made), and a frozen cgroup freezes what enters it. */
const LAST = new Set(["pids.max", "freezer.state", "cgroup.freeze"]);

export type PropStage = "creation" | "normal" | "last";

export function stageOf(name: string): PropStage {
  if (AT_CREATION.has(name)) return "creation";
  if (LAST.has(name)) return "last";
  return "normal";
}

/** Files restore never writes, whatever an image says: they move or kill
 * tasks, run programs as root, or are not settings. */
const NEVER = new Set([
  "cgroup.procs",
  "cgroup.threads",
  "tasks",
  "cgroup.kill",
  "release_agent",
  "cgroup.events",
  "cgroup.controllers",
  "cgroup.stat",
  "cgroup.stat.local",
  "cgroup.sane_behavior",
  "cgroup.event_control",
  "cgroup.pressure",
  "memory.force_empty",
  "memory.reclaim",
  "memory.peak",
  "devices.allow",
  "devices.deny",
]);

/** Why property `name` may not be restored into a cgroup of `hierarchy`, or
 * undefined: only a setting of one of its controllers (or of cgroups
 * themselves), never a file that moves, kills or reports. */
export function refusedProp(hierarchy: string, name: string): string | undefined {
  if (!/^[a-z0-9_]+(\.[a-z0-9_]+)+$/.test(name) && name !== "notify_on_release") {
    return "is not a cgroup property name";
  }
  if (NEVER.has(name) || /\.(stat|events|current|pressure|peak)(\.local)?$/.test(name)) {
    return "is not a setting ckpt restores";
  }
  const prefix = name.split(".")[0];
  if (prefix === "cgroup" || name === "notify_on_release") return undefined;
  if (prefix === "freezer" && name !== "freezer.state") return "is not a setting ckpt restores";
  if (isV2(hierarchy)) return undefined;
  const ctl = hierarchy.split(",");
  if (ctl.includes(prefix) || (prefix === "memory" && ctl.includes("memory"))) return undefined;
  return `is not a property of the ${hierarchy} hierarchy`;
}

/** Property lists per controller: the defaults with --cgroup-props merged in
 * or replacing them. */
export class PropTable {
  private constructor(private readonly byController: Map<string, string[]>) {}

  static of(spec?: string): PropTable {
    const t = new Map(Object.entries(DEFAULT_PROPS).map(([k, v]) => [k, [...v]]));
    for (const e of spec ? parsePropsSpec(spec) : []) {
      const had = t.get(e.controller) ?? [];
      t.set(e.controller, e.strategy === "merge" ? [...had, ...e.props] : [...e.props]);
    }
    return new PropTable(t);
  }

  /** The property files to read in a cgroup of `hierarchy`, in writing
   * order. */
  names(hierarchy: string): string[] {
    if (isV2(hierarchy)) {
      const all = [...V2_CORE];
      for (const list of this.byController.values()) all.push(...list);
      return [...new Set(all)];
    }
    const all: string[] = [];
    for (const c of hierarchy.split(",")) all.push(...(this.byController.get(c) ?? []));
    all.push(...V1_GLOBAL);
    return [...new Set(all)];
  }
}

export interface PropsSpecEntry {
  controller: string;
  strategy: "merge" | "replace";
  props: string[];
}

/** CRIU's --cgroup-props format (a small YAML subset):
 *   "cpu":
 *    - "strategy": "replace"
 *    - "properties": ["cpu.shares", "cpu.cfs_quota_us"]
 */
export function parsePropsSpec(text: string): PropsSpecEntry[] {
  const entry =
    /^\s*"([^"\n]+)":\s*\n\s*-\s*"strategy":\s*"([^"\n]*)"\s*\n\s*-\s*"properties":\s*\[([^\]]*)\]\s*(?:\n|$)/;
  const out: PropsSpecEntry[] = [];
  let rest = text;
  while (rest.trim()) {
    const m = entry.exec(rest);
    if (!m) {
      throw new UsageError(
        `--cgroup-props: cannot read '${rest.trim().split("\n")[0].slice(0, 60)}': expected ` +
          `"CONTROLLER":\\n - "strategy": "merge|replace"\\n - "properties": ["NAME", …]`,
      );
    }
    const [, controller, strategy, list] = m;
    if (strategy !== "merge" && strategy !== "replace") {
      throw new UsageError(`--cgroup-props: strategy of "${controller}" must be merge or replace`);
    }
    const props = list.split(",").map((s) => s.trim()).filter(Boolean).map((s) => {
      const q = /^"([A-Za-z0-9_.]+)"$/.exec(s);
      if (!q) throw new UsageError(`--cgroup-props: ${s} is not a quoted property name`);
      return q[1];
    });
    out.push({ controller, strategy, props });
    rest = rest.slice(m[0].length);
  }
  return out;
}

/** How a value read at dump is kept in the image: what can be written back
 * (memory.oom_control reads as several lines; only oom_kill_disable is a
 * setting). */
export function recordedValue(name: string, value: string): string {
  if (name === "memory.oom_control") {
    return /oom_kill_disable\s+(\d)/.exec(value)?.[1] ?? "0";
  }
  return value;
}

/** The writes that give a cgroup the recorded value, each one write(2) on
 * the named file; none when the value is what the kernel gives a new cgroup
 * or cannot be asked for. */
export function writesFor(name: string, value: string): { file: string; value: string }[] {
  switch (name) {
    case "cgroup.type":
      // "domain threaded" and "domain invalid" follow from their children.
      return value === "threaded" ? [{ file: name, value }] : [];
    case "cgroup.subtree_control":
      return value.trim()
        ? [{ file: name, value: value.trim().split(/\s+/).map((c) => `+${c}`).join(" ") }]
        : [];
    case "devices.list": {
      // Only a deny-all then one allow per line (the kernel parses the first
      // line of a write) recreates a list; a new cgroup starts as its parent.
      const lines = value.split("\n").filter(Boolean);
      if (lines.length === 1 && lines[0] === "a *:* rwm") return [];
      return [
        { file: "devices.deny", value: "a" },
        ...lines.map((l) => ({ file: "devices.allow", value: l })),
      ];
    }
    case "net_prio.ifpriomap":
      // A new cgroup has priority 0 everywhere; devices may differ here.
      return value.split("\n").filter((l) => /\s[1-9]\d*$/.test(l)).map((l) => ({
        file: name,
        value: l,
      }));
    case "freezer.state":
      return value === "FROZEN" ? [{ file: name, value }] : [];
    case "cgroup.freeze":
      return value === "1" ? [{ file: name, value }] : [];
    default:
      return [{ file: name, value }];
  }
}
