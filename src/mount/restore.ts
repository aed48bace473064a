// Restore side of a mount namespace: the restored root is made in a new one
// (a copy of ckpt's), and there, as plan ops of its own, it builds the
// tree's mounts under a staging directory — the root filesystem bound from
// --root, each mount parents first (bind sources before their binds): host
// mounts bound from the paths --external names, proc, sysfs, devpts, mqueue
// and tmpfs made anew (in the tree's new PID, network and IPC namespaces,
// which it is already in), binds of the tree's own mounts — and moves into
// it with pivot_root, dropping ckpt's mounts. It stops then: ckpt writes
// each tmpfs's content (through a detached clone of it) and opens the
// tree's files below the new root. Then it sets the mounts' flags (read-only
// and the rest, and read-only filesystems) and goes on.
import type { Mount, MountNamespace } from "../gen/ckpt/images_pb.ts";
import { MountHow } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { cstr, fd as fdops, O } from "../native/mod.ts";
import { cloneMountOf } from "../native/mount.ts";
import { OP, OP_MAY_FAIL, PHASE, type PlanOp } from "../restore/plan_buffer.ts";
import { S_IF, S_IFMT } from "../native/fsops.ts";
import { log } from "../util/log.ts";
import { formatMs } from "../util/units.ts";
import { MS } from "./mountinfo.ts";
import { readMountInfo } from "./mountinfo.ts";
import { below } from "./model.ts";
import { entryAt, writeTmpfs } from "./tmpfs.ts";

const SYS = { chdir: 80, pivot_root: 155, mount: 165, umount2: 166, mkdirat: 258, mknodat: 259 };
const AT_FDCWD = -100;
const MNT_DETACH = 2;

export interface MountRestoreOptions {
  /** --root: the directory that becomes the tree's root filesystem. */
  root?: string;
  /** --external mnt[KEY]:PATH (and --ext-mount-map KEY:PATH): key → host path. */
  external: Map<string, string>;
}

/** --external values of the form mnt[KEY]:PATH and --ext-mount-map KEY:PATH
 * as key → host path. */
export function restoreExternals(
  external: string[],
  extMountMap: string[] = [],
): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of external) {
    const m = /^mnt\[([^\]]+)\]:(.+)$/.exec(e);
    if (m) out.set(m[1], m[2]);
    else if (e.startsWith("mnt[")) {
      throw new RestoreError(`--external ${e}: expected mnt[KEY]:PATH`);
    }
  }
  for (const e of extMountMap) {
    const i = e.indexOf(":");
    if (i <= 0) throw new RestoreError(`--ext-mount-map ${e}: expected KEY:PATH`);
    out.set(e.slice(0, i), e.slice(i + 1));
  }
  return out;
}

const str = (s: string) => ({ bytes: cstr(s) });

function syscall(phase: number, a: (bigint | number | { bytes: Uint8Array })[], what: string) {
  return { op: OP.SYSCALL, phase, a, what } satisfies PlanOp;
}

const join = (a: string, b: string) => (b ? `${a.replace(/\/$/, "")}/${b}` : a);

function describe(m: Mount): string {
  return `mount ${m.id} (${m.fstype}) at ${m.mountpoint}`;
}

export class MountPlan {
  private staging: string | undefined;

  private constructor(
    private readonly ns: MountNamespace,
    private readonly rootSource: string,
    private readonly hostPaths: Map<number, string>,
    private readonly order: Mount[],
  ) {}

  /** Checks what restore was given against what the tree's mounts need
   * (nothing is made yet). */
  static of(ns: MountNamespace, opts: MountRestoreOptions): MountPlan {
    const root = ns.mounts[0];
    if (!root || root.how !== MountHow.MOUNT_ROOT) {
      throw new RestoreError("namespaces.img: the mount tree does not start with its root mount");
    }
    let rootSource = opts.root;
    if (rootSource === undefined) {
      const own = readMountInfo("self").find((m) => m.point === "/");
      const same = own && own.major === root.devMajor && own.minor === root.devMinor &&
        own.root === root.root;
      if (!same) {
        throw new RestoreError(
          `the tree's root filesystem was ${root.fstype} ${root.source} (${root.root}), not ` +
            `ckpt's own: give the directory that holds it with --root DIR`,
        );
      }
      rootSource = "/";
    }
    const st = statOr(rootSource);
    if (!st?.isDirectory) {
      throw new RestoreError(
        `--root ${rootSource}: ${st ? "not a directory" : "no such directory"}`,
      );
    }
    const hostPaths = new Map<number, string>();
    const missing: string[] = [];
    for (const m of ns.mounts) {
      if (m.how !== MountHow.MOUNT_EXTERNAL) continue;
      const path = opts.external.get(m.externalKey);
      if (path === undefined) {
        missing.push(`--external mnt[${m.externalKey}]:PATH (for ${m.mountpoint})`);
        continue;
      }
      const s = statOr(path);
      if (!s) throw new RestoreError(`--external mnt[${m.externalKey}]:${path}: no such path`);
      if (s.isDirectory === m.isFile) {
        throw new RestoreError(
          `--external mnt[${m.externalKey}]:${path}: ${m.mountpoint} was mounted on a ` +
            `${m.isFile ? "file" : "directory"}, ${path} is ${
              s.isDirectory ? "a directory" : "not"
            }`,
        );
      }
      hostPaths.set(m.id, path);
    }
    if (missing.length) {
      throw new RestoreError(
        `the tree had mounts of the host: give their host paths with ${missing.join(", ")}`,
      );
    }
    return new MountPlan(ns, rootSource, hostPaths, restoreOrder(ns.mounts));
  }

  /** A directory of ckpt's to build the tree in (made before the root is
   * forked, so its copy of ckpt's mounts has it; removed after). */
  prepare(): void {
    this.staging = Deno.makeTempDirSync({ prefix: "ckpt-root-" });
    Deno.chmodSync(this.staging, 0o700);
  }

  close(): void {
    if (!this.staging) return;
    try {
      Deno.removeSync(this.staging);
    } catch (err) {
      log.warn(`cannot remove ${this.staging}: ${(err as Error).message}`);
    }
    this.staging = undefined;
  }

  /** The root's ops: the tree mounted and moved into (PHASE.MOUNTS), then,
   * after ckpt filled it, the mounts' flags set (PHASE.MOUNTED). */
  ops(): PlanOp[] {
    const S = this.staging;
    if (!S) throw new Error("MountPlan.prepare() first");
    const A = PHASE.MOUNTS, B = PHASE.MOUNTED;
    const out: PlanOp[] = [
      syscall(
        A,
        [SYS.mount, 0, str("/"), 0, MS.REC | MS.SLAVE, 0],
        "making ckpt's mounts slaves in the new mount namespace",
      ),
      syscall(
        A,
        [SYS.mount, str(this.rootSource), str(S), 0, MS.BIND, 0],
        `binding the root filesystem ${this.rootSource}`,
      ),
    ];
    const byId = new Map(this.ns.mounts.map((m) => [m.id, m]));
    const made = new Set<string>();
    // Makes what a path needs below mount m's root to exist: the dirs of
    // a tmpfs made anew (its content comes later), the path itself as what
    // the content will have there (a device node a bind shows…).
    const ensure = (m: Mount, rel: string, last: { file: boolean } | "content") => {
      const parts = rel.split("/").filter(Boolean);
      for (let i = 0; i < parts.length; i++) {
        const sub = parts.slice(0, i + 1).join("/");
        const at = join(S + (m.mountpoint === "/" ? "" : m.mountpoint), sub);
        if (made.has(at)) continue;
        made.add(at);
        const final = i === parts.length - 1;
        const e = m.how === MountHow.MOUNT_FRESH ? entryAt(m.content, sub) : undefined;
        let mode = S_IF.DIR | 0o755, dev = 0n;
        if (final && last === "content" && e) {
          mode = e.mode & S_IFMT ? (e.mode & S_IFMT) | 0o600 : mode;
          dev = e.rdev;
        } else if (final && last !== "content" && last.file) mode = S_IF.REG | 0o644;
        const op = (mode & S_IFMT) === S_IF.DIR
          ? syscall(A, [SYS.mkdirat, AT_FDCWD, str(at), 0o755], `making ${at}`)
          : syscall(A, [SYS.mknodat, AT_FDCWD, str(at), mode, dev], `making ${at}`);
        out.push({ ...op, flags: OP_MAY_FAIL }); // there already: fine
      }
    };
    const placeOf = (m: Mount) => S + (m.mountpoint === "/" ? "" : m.mountpoint);
    for (const m of this.order) {
      if (m.how === MountHow.MOUNT_ROOT) continue;
      const parent = byId.get(m.parentId)!;
      const rel = below(m.mountpoint, parent.mountpoint) ?? m.mountpoint.slice(1);
      ensure(parent, rel, { file: m.isFile });
      const target = str(placeOf(m));
      switch (m.how) {
        case MountHow.MOUNT_FRESH:
          out.push(
            syscall(A, [
              SYS.mount,
              str(m.source || m.fstype),
              target,
              str(m.fstype),
              m.flags & (MS.NOSUID | MS.NODEV | MS.NOEXEC),
              m.options ? str(m.options) : 0,
            ], `mounting ${m.fstype} at ${m.mountpoint} (${m.options || "no options"})`),
          );
          break;
        case MountHow.MOUNT_EXTERNAL: {
          const host = this.hostPaths.get(m.id)!;
          out.push(
            syscall(
              A,
              [SYS.mount, str(host), target, 0, MS.BIND, 0],
              `binding ${host} (external mount ${m.externalKey}) at ${m.mountpoint}`,
            ),
          );
          break;
        }
        case MountHow.MOUNT_BIND: {
          const src = byId.get(m.bindOf)!;
          if (src.how === MountHow.MOUNT_FRESH) ensure(src, m.bindPath, "content");
          const from = join(placeOf(src), m.bindPath);
          out.push(
            syscall(
              A,
              [SYS.mount, str(from), target, 0, MS.BIND, 0],
              `binding ${join(src.mountpoint, m.bindPath)} (of ${
                describe(src)
              }) at ${m.mountpoint}`,
            ),
          );
          break;
        }
      }
    }
    out.push(
      syscall(A, [SYS.chdir, str(S)], `entering ${S}`),
      syscall(
        A,
        [SYS.pivot_root, str("."), str(".")],
        "moving into the restored root (pivot_root)",
      ),
      syscall(A, [SYS.umount2, str("."), MNT_DETACH], "dropping ckpt's mounts"),
      syscall(A, [SYS.chdir, str("/")], "entering /"),
    );
    for (const m of this.order) {
      if (m.how === MountHow.MOUNT_FRESH && m.sbReadonly) {
        out.push(
          syscall(
            B,
            [SYS.mount, 0, str(m.mountpoint), 0, MS.REMOUNT | MS.RDONLY, 0],
            `making the ${m.fstype} of ${m.mountpoint} read-only`,
          ),
        );
      }
      out.push(
        syscall(
          B,
          [SYS.mount, 0, str(m.mountpoint), 0, MS.REMOUNT | MS.BIND | m.flags, 0],
          `setting the flags of ${describe(m)}`,
        ),
      );
    }
    return out;
  }

  /** At the root's stop in its built tree: the content of each tmpfs. */
  fill(root: number): void {
    const t0 = performance.now();
    const tmpfs = this.ns.mounts.filter((m) =>
      m.how === MountHow.MOUNT_FRESH && m.fstype === "tmpfs" && m.content
    );
    if (!tmpfs.length) return;
    const nsfd = fdops.open(`/proc/${root}/ns/mnt`, O.RDONLY | O.CLOEXEC);
    try {
      for (const m of tmpfs) {
        const where = `the tmpfs at ${m.mountpoint}`;
        let clone: number;
        try {
          clone = cloneMountOf(nsfd, m.mountpoint);
        } catch (err) {
          throw new RestoreError(`${where}: cannot be filled: ${(err as Error).message}`);
        }
        try {
          writeTmpfs(clone, m.content!, where);
        } finally {
          fdops.close(clone);
        }
      }
    } finally {
      fdops.close(nsfd);
    }
    log.debug(`tmpfs content of ${tmpfs.length} mount(s) in ${formatMs(performance.now() - t0)}`);
  }
}

function statOr(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.statSync(path);
  } catch {
    return undefined;
  }
}

/** Mounts in an order where each comes after its parent and after the
 * mount it binds part of (the kernel's order otherwise). */
export function restoreOrder(mounts: Mount[]): Mount[] {
  const done = new Set<number>();
  const out: Mount[] = [];
  let left = [...mounts];
  while (left.length) {
    const ready = left.filter((m) =>
      (m.parentId === 0 || done.has(m.parentId) || !mounts.some((x) => x.id === m.parentId)) &&
      (m.how !== MountHow.MOUNT_BIND || done.has(m.bindOf))
    );
    if (!ready.length) {
      throw new RestoreError(
        `namespaces.img: mounts ${left.map((m) => m.id).join(", ")} depend on each other`,
      );
    }
    // One at a time, the first ready in the kernel's order.
    const m = ready[0];
    out.push(m);
    done.add(m.id);
    left = left.filter((x) => x !== m);
  }
  return out;
}
