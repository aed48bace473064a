// The cgroup options as CRIU spells them: --manage-cgroups[=MODE] and
// --cgroup-root [CONTROLLER:]/PATH (dump and restore), --cgroup-props,
// --cgroup-props-file and --cgroup-dump-controller (dump).
import { UsageError } from "../errors.ts";
import type { OptionSpec } from "../cli/spec.ts";
import { names, validPath } from "./hierarchy.ts";

/** CRIU's --manage-cgroups modes. On dump every mode but ignore records the
 * cgroups; on restore:
 *  none   — the cgroups must exist; no setting is written.
 *  props  — they must exist; their settings are written.
 *  soft   — missing ones are made, and only those get their settings (default).
 *  full   — missing ones are made; every one gets its settings.
 *  strict — none may exist: all are made, with their settings.
 *  ignore — cgroups are neither saved nor restored: the tree stays in ckpt's. */
export type ManageMode = "none" | "props" | "soft" | "full" | "strict" | "ignore";
export const MODES: readonly ManageMode[] = ["none", "props", "soft", "full", "strict", "ignore"];

/** --manage-cgroups: bare means soft, as in CRIU. */
export function parseManageMode(v: string | undefined): ManageMode {
  if (v === undefined || v === "") return "soft";
  if ((MODES as readonly string[]).includes(v)) return v as ManageMode;
  throw new UsageError(`--manage-cgroups must be one of ${MODES.join(", ")}, not '${v}'`);
}

/** One --cgroup-root: a controller's (or, without one, every hierarchy's)
 * root cgroup. cgroup v2 is named cgroup2, unified or "" (":/PATH"). */
export interface CgroupRoot {
  controller?: string;
  path: string;
}

export function parseCgroupRoots(values: string[]): CgroupRoot[] {
  return values.map((v) => {
    const m = /^(?:([^:/]*):)?(\/.*)$/.exec(v);
    if (!m || !validPath(m[2])) {
      throw new UsageError(
        `--cgroup-root '${v}' is not [CONTROLLER:]/PATH (e.g. cpu:/box or /box; no '..')`,
      );
    }
    return m[1] === undefined ? { path: m[2] } : { controller: m[1], path: m[2] };
  });
}

/** The root given for hierarchy `name`: its controller's, else the one
 * without a controller. Two controllers of one hierarchy given different
 * roots is an error (as in CRIU). */
export function rootFor(roots: CgroupRoot[], name: string): string | undefined {
  const mine = roots.filter((r) => r.controller !== undefined && names(name, r.controller));
  const paths = [...new Set(mine.map((r) => r.path))];
  if (paths.length > 1) {
    throw new UsageError(
      `--cgroup-root gives the ${name || "cgroup2"} hierarchy two roots (${paths.join(", ")})`,
    );
  }
  return paths[0] ?? roots.find((r) => r.controller === undefined)?.path;
}

/** --cgroup-props (text) and --cgroup-props-file (a file of the same). */
export function propsSpec(text?: string, file?: string): string | undefined {
  let spec = text ?? "";
  if (file) {
    try {
      spec += `${spec ? "\n" : ""}${Deno.readTextFileSync(file)}`;
    } catch (err) {
      throw new UsageError(`--cgroup-props-file ${file}: ${(err as Error).message}`);
    }
  }
  return spec || undefined;
}

/** --manage-cgroups and --cgroup-root, on dump and restore. */
export const CGROUP_OPTIONS: OptionSpec[] = [
  {
    name: "manage-cgroups",
    kind: "string",
    optionalValue: true,
    arg: "MODE",
    help: "cgroups: none, props, soft (default, also bare), full, strict or ignore " +
      "(neither saved nor restored), as in CRIU",
  },
  {
    name: "cgroup-root",
    kind: "list",
    arg: "[CTRL:]/PATH",
    help: "the tree's root cgroup (of controller CTRL, or of every hierarchy; cgroup2: for v2)",
  },
];
