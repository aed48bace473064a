// Dump side of a mount namespace of the tree's own: its mounts as the root
// sees them, decided by model.ts; the content of each tmpfs made anew, read
// through a detached clone of it (what is mounted over parts of it does not
// hide them); whether a mountpoint is a file or a directory (restore makes
// the mountpoints a tmpfs's content does not have yet). Every problem is a
// blocker of the dump.
import { create } from "@bufbuild/protobuf";
import { MountHow, type MountNamespace, MountNamespaceSchema } from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import type { Blocker } from "../files/collect.ts";
import { fd as fdops, type NativeError, O } from "../native/mod.ts";
import { cloneMountOf } from "../native/mount.ts";
import { log } from "../util/log.ts";
import { formatBytes, formatMs } from "../util/units.ts";
import { classifyMounts } from "./model.ts";
import { readMountInfo } from "./mountinfo.ts";
import { readTmpfs, type TmpfsBudget } from "./tmpfs.ts";

export interface MountDumpOptions {
  /** --external mnt[MOUNTPOINT]:KEY: mountpoint → key. */
  external: Map<string, string>;
  /** The root has a cgroup namespace of its own. */
  ownCgroupNs: boolean;
}

/** --external values of the form mnt[MOUNTPOINT]:KEY (and --ext-mount-map's
 * MOUNTPOINT:KEY) as mountpoint → key; other kinds are left to their owners. */
export function dumpExternals(external: string[], extMountMap: string[] = []): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of external) {
    const m = /^mnt\[([^\]]*)\]:(.+)$/.exec(e);
    if (m) out.set(m[1], m[2]);
    else if (e.startsWith("mnt[")) {
      throw new DumpError(`--external ${e}: expected mnt[MOUNTPOINT]:KEY`);
    }
  }
  for (const e of extMountMap) {
    const i = e.indexOf(":");
    if (i <= 0) throw new DumpError(`--ext-mount-map ${e}: expected MOUNTPOINT:KEY`);
    out.set(e.slice(0, i), e.slice(i + 1));
  }
  return out;
}

/** The mount tree of root's mount namespace with the content of its tmpfs
 * mounts; what cannot be restored goes to `blockers` (and then the content
 * is not read). */
export function dumpMounts(
  root: number,
  opts: MountDumpOptions,
  blockers: Blocker[],
): MountNamespace | undefined {
  const t0 = performance.now();
  const add = (message: string) => blockers.push({ pid: root, kind: "mount", message });
  let rootDir = "/";
  try {
    rootDir = Deno.readLinkSync(`/proc/${root}/root`);
  } catch { /* exited: said elsewhere */ }
  if (rootDir !== "/") {
    add(
      `pid ${root} has ${rootDir} as its root directory inside its mount namespace (chroot): ` +
        `only a tree whose root is its mount namespace's root can be dumped with its mounts`,
    );
    return undefined;
  }
  const hostDevs = new Set(readMountInfo("self").map((m) => `${m.major}:${m.minor}`));
  const lines = readMountInfo(root);
  const tree = classifyMounts(lines, {
    external: opts.external,
    hostDevs,
    ownCgroupNs: opts.ownCgroupNs,
  });
  for (const p of tree.problems) add(p);
  const points = new Map<string, number[]>();
  for (const m of tree.mounts) {
    points.set(m.mountpoint, [...(points.get(m.mountpoint) ?? []), m.id]);
  }
  for (const [point, ids] of points) {
    if (ids.length > 1) {
      add(
        `mounts ${ids.join(", ")} are stacked at ${point}: only the top one is reachable; ` +
          `unmount the others before the dump`,
      );
    }
  }
  for (const [point, key] of opts.external) {
    if (!tree.mounts.some((m) => m.mountpoint === point)) {
      log.debug(`--external mnt[${point}]:${key}: no mount there (nothing to do)`);
    }
  }
  if (blockers.some((b) => b.kind === "mount")) return undefined;
  for (const m of tree.mounts) {
    try {
      m.isFile = !Deno.statSync(`/proc/${root}/root${m.mountpoint}`).isDirectory;
    } catch (err) {
      add(`mount ${m.id} at ${m.mountpoint} cannot be looked at: ${(err as Error).message}`);
    }
  }
  const tmpfs = tree.mounts.filter((m) => m.how === MountHow.MOUNT_FRESH && m.fstype === "tmpfs");
  if (tmpfs.length) {
    const budget: TmpfsBudget = { bytes: 0, entries: 0 };
    const nsfd = fdops.open(`/proc/${root}/ns/mnt`, O.RDONLY | O.CLOEXEC);
    try {
      for (const m of tmpfs) {
        const where = `the tmpfs at ${m.mountpoint} (mount ${m.id})`;
        let clone: number;
        try {
          clone = cloneMountOf(nsfd, m.mountpoint);
        } catch (err) {
          add(`${where}: cannot be read: ${(err as NativeError).message}`);
          continue;
        }
        try {
          m.content = readTmpfs(clone, where, budget);
        } catch (err) {
          if (!(err instanceof DumpError)) throw err;
          add(err.message);
        } finally {
          fdops.close(clone);
        }
      }
    } finally {
      fdops.close(nsfd);
    }
    log.debug(
      `tmpfs content: ${budget.entries} entries, ${formatBytes(budget.bytes)} in ${
        formatMs(performance.now() - t0)
      }`,
    );
  }
  const byHow = (h: MountHow) => tree.mounts.filter((m) => m.how === h).length;
  log.info(
    `pid ${root}: ${tree.mounts.length} mounts (${byHow(MountHow.MOUNT_FRESH)} made anew, ${
      byHow(MountHow.MOUNT_BIND)
    } binds, ${byHow(MountHow.MOUNT_EXTERNAL)} external)`,
  );
  return create(MountNamespaceSchema, { mounts: tree.mounts });
}
