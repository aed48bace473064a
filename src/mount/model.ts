// The mount tree of a dumped mount namespace, decided mount by mount: which
// one is the tree's root (restored from --root), which belong to the host
// (named external by the operator, bound again from host paths), which are
// filesystems of the tree's own that restore makes anew (proc, sysfs,
// devpts, mqueue, tmpfs with its content, cgroup in a cgroup namespace of the
// tree's), and which show part of another mount of the tree (binds). What
// fits none of these is a problem the dump names, with the option that
// would make it one of them. Pure: no /proc or filesystem access here.
import { create } from "@bufbuild/protobuf";
import { type Mount, MountHow, MountSchema } from "../gen/ckpt/images_pb.ts";
import type { MountLine } from "./mountinfo.ts";

/** Filesystems restore makes anew. Their content is the kernel's (proc,
 * sysfs, mqueue: of the tree's namespaces, made before the mounts), empty
 * (devpts: a new instance) or saved (tmpfs). */
export const FRESH_TYPES = new Set(["proc", "sysfs", "devpts", "mqueue", "tmpfs"]);
const CGROUP_TYPES = new Set(["cgroup", "cgroup2"]);
/** Each mount of these is a filesystem of its own (a new superblock), so one
 * that ckpt's own mount namespace shows too was bound from the host. sysfs
 * and mqueue are one per network/IPC namespace: mounting one again in the
 * same namespace gives the same filesystem. */
const PER_MOUNT = new Set(["proc", "devpts", "tmpfs", "cgroup", "cgroup2"]);

export interface MountContext {
  /** --external mnt[MOUNTPOINT]:KEY at dump: mountpoint → key. */
  external: Map<string, string>;
  /** "MAJOR:MINOR" of every filesystem ckpt's own mount namespace shows. */
  hostDevs: Set<string>;
  /** The tree has a cgroup namespace of its own (a cgroup mount of its
   * root then shows that namespace's cgroups). */
  ownCgroupNs: boolean;
}

export interface MountTree {
  /** Parents before children, the root mount first. */
  mounts: Mount[];
  /** What cannot be restored, one line each. */
  problems: string[];
}

const devOf = (m: MountLine) => `${m.major}:${m.minor}`;

function describe(m: MountLine): string {
  return `mount ${m.id} at ${m.point} (${m.fstype} ${m.source}${
    m.root === "/" ? "" : `, ${m.root}`
  })`;
}

/** Whether `root` is `base` or below it; the part below ("" for itself). */
export function below(root: string, base: string): string | undefined {
  if (base === "/") return root === "/" ? "" : root.replace(/^\//, "");
  if (root === base) return "";
  return root.startsWith(`${base}/`) ? root.slice(base.length + 1) : undefined;
}

/** Orders lines parents first (keeping the kernel's order otherwise) from
 * the root mount; lines that do not hang below it are dropped. */
function treeOrder(lines: MountLine[], root: MountLine): MountLine[] {
  const kids = new Map<number, MountLine[]>();
  for (const m of lines) {
    if (m === root) continue;
    kids.set(m.parent, [...(kids.get(m.parent) ?? []), m]);
  }
  const out: MountLine[] = [];
  const seen = new Set<number>();
  const visit = (m: MountLine) => {
    if (seen.has(m.id)) return;
    seen.add(m.id);
    out.push(m);
    for (const k of kids.get(m.id) ?? []) visit(k);
  };
  visit(root);
  return out;
}

export function classifyMounts(lines: MountLine[], ctx: MountContext): MountTree {
  const problems: string[] = [];
  const atRoot = lines.filter((m) => m.point === "/");
  // Mounts stacked on "/": the topmost is what the tree sees.
  const root = atRoot.find((m) => !atRoot.some((o) => o.parent === m.id));
  if (!root) return { mounts: [], problems: ["the mount namespace shows no mount at /"] };
  if (atRoot.length > 1) {
    problems.push(
      `${atRoot.length} mounts are stacked at / (${
        atRoot.map((m) => m.id).join(", ")
      }): only the top one can be restored; unmount the others`,
    );
  }
  const ordered = treeOrder(lines, root);
  const how = new Map<number, MountHow>();
  const keys = new Map<number, string>();
  how.set(root.id, MountHow.MOUNT_ROOT);
  // First what comes from outside or is made anew; then binds of those.
  const firstOfDev = new Map<string, MountLine>();
  for (const m of ordered) {
    if (m === root) continue;
    const key = ctx.external.get(m.point);
    if (key !== undefined) {
      how.set(m.id, MountHow.MOUNT_EXTERNAL);
      keys.set(m.id, key);
      continue;
    }
    const fresh = FRESH_TYPES.has(m.fstype) || (CGROUP_TYPES.has(m.fstype) && ctx.ownCgroupNs);
    if (!fresh || m.root !== "/" || firstOfDev.has(devOf(m)) || devOf(m) === devOf(root)) continue;
    if (PER_MOUNT.has(m.fstype) && ctx.hostDevs.has(devOf(m))) continue; // the host's: below
    firstOfDev.set(devOf(m), m);
    how.set(m.id, MountHow.MOUNT_FRESH);
  }
  const sources = ordered.filter((m) => how.has(m.id));
  const bindOf = new Map<number, { of: MountLine; path: string }>();
  for (const m of ordered) {
    if (how.has(m.id)) continue;
    let best: { of: MountLine; path: string } | undefined;
    for (const s of sources) {
      if (devOf(s) !== devOf(m)) continue;
      const path = below(m.root, s.root);
      if (path === undefined) continue;
      if (!best || s.root.length > best.of.root.length) best = { of: s, path };
    }
    if (best) {
      how.set(m.id, MountHow.MOUNT_BIND);
      bindOf.set(m.id, best);
      continue;
    }
    const shared = PER_MOUNT.has(m.fstype) && ctx.hostDevs.has(devOf(m))
      ? " (ckpt's own mount namespace shows this filesystem too)"
      : "";
    problems.push(
      `${describe(m)} is a filesystem of the host${shared}: name it with ` +
        `--external mnt[${m.point}]:KEY at dump, and give its host path with ` +
        `--external mnt[KEY]:PATH at restore`,
    );
  }
  for (const m of ordered) {
    const h = how.get(m.id);
    if (h === MountHow.MOUNT_ROOT || h === MountHow.MOUNT_EXTERNAL) continue;
    if (m.shared || m.master) {
      problems.push(
        `${describe(m)} ${
          m.shared ? `is shared (peer group ${m.shared})` : `receives mounts from group ${m.master}`
        }: mount propagation inside the tree is not restored yet; make it private ` +
          `(mount --make-private ${m.point})`,
      );
    }
    if (m.unbindable) {
      problems.push(`${describe(m)} is unbindable: that is not restored yet`);
    }
  }
  const mounts = ordered.filter((m) => how.has(m.id)).map((m) => {
    const b = bindOf.get(m.id);
    return create(MountSchema, {
      id: m.id,
      parentId: m === root ? 0 : m.parent,
      mountpoint: m.point,
      root: m.root,
      fstype: m.fstype,
      source: m.source,
      flags: m.flags,
      options: m.options,
      sbReadonly: m.sbReadonly,
      how: how.get(m.id)!,
      externalKey: keys.get(m.id) ?? "",
      bindOf: b?.of.id ?? 0,
      bindPath: b?.path ?? "",
      devMajor: m.major,
      devMinor: m.minor,
    });
  });
  return { mounts, problems };
}
