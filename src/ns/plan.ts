// Restore side of namespaces, in one place: which namespaces the restored
// root is made in (clone3 flags, and the time and cgroup namespaces it makes
// itself around its first stop), what ckpt puts in them while the root waits
// at that stop (user maps, time offsets, cgroup roots, host names, IPC
// objects), and what is undone once the tree runs. Mount and network
// namespaces are to join here: made with the root, filled at the same stop.
import type { IdMapRange, NamespacesImage } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { log } from "../util/log.ts";
import { CLONE_FLAG, NS_NAMES, type NsKind, nsOf } from "./kinds.ts";
import { sleepSync } from "../util/sleep.ts";
import {
  FLAG_KEEP_GROUPS,
  FLAG_MOUNTS,
  FLAG_NEW_CGROUP,
  FLAG_NEW_TIME,
} from "../restore/plan_buffer.ts";
import { restoreUts } from "./uts.ts";
import { restoreIpc } from "./ipc.ts";
import { ShmHolds } from "./sysv.ts";
import type { SysvAttach } from "./sysv_vma.ts";
import { type EnterableKind, FatalNamespaceError } from "./enter.ts";
import { hex } from "../util/units.ts";
import { offsetsFor } from "./time.ts";
import { insideId, restoreUser } from "./user.ts";
import { enterCgroupRoots } from "./cgroup.ts";
import { restoreNet } from "./net/restore.ts";
import type { VethExternal } from "./net/options.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { setns } from "../native/ns.ts";
import { CLONE_NEWNET } from "../native/ns.ts";
import { MountPlan, type MountRestoreOptions } from "../mount/restore.ts";

export interface NamespaceOptions {
  /** --time-ns: a new time namespace even for a tree that shared ckpt's. */
  timeNs?: boolean;
  /** --empty-ns net: the tree's own network namespace is made empty (lo
   * only), whatever the images hold. */
  emptyNet?: boolean;
  /** --join-ns net:PATH: the root is made in that existing network
   * namespace instead of a new one. */
  joinNet?: string;
  /** --external veth[IN]:OUT[@BR] and --veth-pair. */
  veths?: Map<string, VethExternal>;
  /** --root and the host paths of external mounts, for a tree with a mount
   * namespace of its own. */
  mounts?: MountRestoreOptions;
}

export class NamespacePlan {
  private readonly holds = new ShmHolds();

  private constructor(
    private readonly img: NamespacesImage | undefined,
    private readonly newTime: boolean,
    private readonly opts: NamespaceOptions,
    /** The tree's mounts, made by the root in its new mount namespace. */
    readonly mounts: MountPlan | undefined,
  ) {}

  static of(img: NamespacesImage | undefined, opts: NamespaceOptions = {}): NamespacePlan {
    if (opts.joinNet) {
      try {
        const st = Deno.statSync(opts.joinNet);
        if (!st.isFile && st.ino === null) throw new Error("not a namespace file");
      } catch (err) {
        throw new RestoreError(`--join-ns net:${opts.joinNet}: ${(err as Error).message}`);
      }
      if (img?.net) log.info(`joining ${opts.joinNet}: the dumped network namespace is not made`);
    }
    const newTime = !!img?.time || (!!opts.timeNs && !!img?.clocks);
    if (opts.timeNs && !img?.clocks) {
      throw new RestoreError(
        "--time-ns needs the tree's clocks at dump, which these images do not have (made by " +
          "an older ckpt)",
      );
    }
    const mounts = img?.mnt
      ? MountPlan.of(img.mnt, opts.mounts ?? { external: new Map() })
      : undefined;
    return new NamespacePlan(img, newTime, opts, mounts);
  }

  /** The kinds of namespace the restored root gets of its own. */
  get kinds(): NsKind[] {
    const i = this.img;
    const out: NsKind[] = [];
    if (i?.user) out.push("user");
    if (i?.pid) out.push("pid");
    if (i?.uts) out.push("uts");
    if (i?.ipc) out.push("ipc");
    if (this.newTime) out.push("time");
    if (i?.cgroup) out.push("cgroup");
    if (i?.net && !this.opts.joinNet) out.push("net");
    if (i?.mnt) out.push("mnt");
    return out;
  }

  /** The root is made from ckpt's thread while it is inside the joined
   * network namespace (a child starts in its parent thread's). */
  spawnIn<T>(fn: () => T): T {
    const path = this.opts.joinNet;
    if (!path) return fn();
    const theirs = fdops.open(path, O.RDONLY | O.CLOEXEC);
    const ours = fdops.open("/proc/thread-self/ns/net", O.RDONLY | O.CLOEXEC);
    try {
      setns(theirs, CLONE_NEWNET, `into the network namespace ${path} (--join-ns)`);
      let outcome: { ok: true; value: T } | { ok: false; err: unknown };
      try {
        outcome = { ok: true, value: fn() };
      } catch (err) {
        outcome = { ok: false, err };
      }
      try {
        setns(ours, CLONE_NEWNET, "back into ckpt's own network namespace");
      } catch (err) {
        throw new FatalNamespaceError((err as Error).message);
      }
      if (!outcome.ok) throw outcome.err;
      return outcome.value;
    } finally {
      fdops.close(theirs);
      fdops.close(ours);
    }
  }

  /** clone3 flags for the root. Its time namespace is made by the root
   * itself (offsets can only be set before anyone is in it), and so is its
   * cgroup namespace (rooted where ckpt moves it first). */
  get cloneFlags(): number {
    return this.kinds.filter((k) => k !== "time" && k !== "cgroup").reduce(
      (a, k) => a | CLONE_FLAG[k],
      0,
    );
  }

  /** Plan flags for the root task. */
  get rootFlags(): number {
    return (this.newTime ? FLAG_NEW_TIME : 0) | (this.img?.cgroup ? FLAG_NEW_CGROUP : 0) |
      (this.mounts ? FLAG_MOUNTS : 0);
  }

  get newPid(): boolean {
    return !!this.img?.pid;
  }

  /** Tasks other than the root cannot be given their dumped pid at ckpt's
   * level: they are forked from inside a user namespace of their own, which
   * has no power over ckpt's PID namespace. They keep their pids inside. */
  get freeOuterPids(): boolean {
    return !!this.img?.user;
  }

  /** Plan flags for any task of the tree (the root's come on top). */
  taskFlags(root: boolean): number {
    return (root ? this.rootFlags : 0) | (this.img?.user?.setgroupsDeny ? FLAG_KEEP_GROUPS : 0);
  }

  /** A task's ids as it sets them from inside its user namespace (the
   * images have them as ckpt saw them). */
  creds(pid: number, c: { uids: number[]; gids: number[]; groups: number[] }) {
    const u = this.img?.user;
    if (!u) return c;
    const map = (m: IdMapRange[], ids: number[], what: string) =>
      ids.map((id) => {
        const inside = insideId(m, id);
        if (inside < 0) {
          throw new RestoreError(
            `pid ${pid}: ${what} ${id} has no id in the restored user namespace (its maps differ)`,
          );
        }
        return inside;
      });
    return {
      uids: map(u.uidMap, c.uids, "uid"),
      gids: map(u.gidMap, c.gids, "gid"),
      groups: u.setgroupsDeny ? [] : map(u.gidMap, c.groups, "group"),
    };
  }

  /** The groups the root is forked with: in a user namespace where
   * setgroups is denied, nobody can set them later. */
  rootGroups(groups: number[]): number[] | undefined {
    return this.img?.user?.setgroupsDeny ? groups : undefined;
  }

  /** The root gets an IPC namespace of its own, with the dumped objects. */
  get ownsIpc(): boolean {
    return !!this.img?.ipc;
  }

  /** The kinds ckpt's thread enters to open deferred files. */
  get enterable(): EnterableKind[] {
    const out = this.kinds.filter((k): k is EnterableKind =>
      ["ipc", "uts", "cgroup", "net"].includes(k)
    );
    if (this.opts.joinNet) out.push("net");
    return out;
  }

  /** The restored tree's network namespace is not ckpt's (its sockets are
   * made inside it). */
  get ownNet(): boolean {
    return this.kinds.includes("net") || !!this.opts.joinNet;
  }

  /** A task's attach of a segment of the tree's IPC namespace: the segment
   * must be among the ones restored. */
  checkSegment(pid: number, a: SysvAttach): void {
    const s = this.img?.ipc?.shm.find((x) => x.id === a.id);
    if (!s || s.size !== a.size) {
      throw new RestoreError(
        `pid ${pid}: System V segment ${a.id} mapped at ${hex(a.base)} is not in namespaces.img`,
      );
    }
  }

  /** At the root's first stop (it exists in its new namespaces and has
   * done nothing else): everything ckpt puts in them. */
  fill(root: number): void {
    const i = this.img;
    if (!i) return;
    const t0 = performance.now();
    if (i.user) restoreUser(root, i.user);
    if (this.newTime) {
      // The root makes the namespace itself (only before anyone is in it
      // can its offsets be set); a seized root may not be there yet.
      const end = performance.now() + 5000;
      while (nsOf(root, "time", true) === nsOf(root, "time")) {
        if (performance.now() > end) {
          throw new RestoreError(`the restored root ${root} made no time namespace`);
        }
        sleepSync(0.1);
      }
      const text = offsetsFor(i.clocks!);
      try {
        Deno.writeTextFileSync(`/proc/${root}/timens_offsets`, text);
      } catch (err) {
        throw new RestoreError(
          `setting the clocks of the restored time namespace failed: ${(err as Error).message}`,
        );
      }
    }
    if (i.cgroup) enterCgroupRoots(root, i.cgroup);
    if (i.uts) restoreUts(root, i.uts);
    if (i.ipc) restoreIpc(root, i.ipc, this.holds);
    if (i.net && this.kinds.includes("net")) {
      restoreNet(
        root,
        this.opts.emptyNet ? { ...i.net, empty: true } : i.net,
        { veths: this.opts.veths },
      );
    }
    if (this.kinds.length) {
      log.debug(
        `namespaces of pid ${root} (${this.kinds.map((k) => NS_NAMES[k]).join(", ")}) filled in ${
          (performance.now() - t0).toFixed(1)
        } ms`,
      );
    }
  }

  /** Every task has attached what it had: ckpt's own holds go. */
  beforeRun(): void {
    this.holds.release();
  }

  close(): void {
    this.holds.release();
    this.mounts?.close();
  }
}
