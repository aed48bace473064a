// Dump side of namespaces: which namespaces the tree's root has of its own
// (those that differ from ckpt's), the checks that make such a tree
// restorable — every task in the root's namespaces, the root the init of its
// PID namespace, no mount namespace of its own yet — and what each
// namespace holds (namespaces.img).
import { create } from "@bufbuild/protobuf";
import {
  type NamespacesImage,
  NamespacesImageSchema,
  type TaskCore,
} from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import { log } from "../util/log.ts";
import { formatMs } from "../util/units.ts";
import type { Blocker } from "../files/collect.ts";
import { readStat } from "../proc/status.ts";
import { DUMPED_KINDS, NS_KINDS, NS_NAMES, type NsKind, nsOf, ownNs } from "./kinds.ts";
import { checkPidRoot, checkPidTree, nsPids } from "./pid.ts";
import { dumpUts } from "./uts.ts";
import { dumpIpc } from "./ipc.ts";
import { checkTimeRoot, readOffsets, treeClocks } from "./time.ts";
import { dumpUser } from "./user.ts";
import { checkCgroupRoot, dumpCgroup } from "./cgroup.ts";
import { dumpNet, type NetDumpOptions } from "./net/dump.ts";

/** The kinds of namespace pid has that ckpt does not share. */
export function ownKinds(pid: number): NsKind[] {
  return NS_KINDS.filter((k) => {
    const theirs = nsOf(pid, k);
    return theirs !== undefined && theirs !== ownNs(k);
  });
}

/** What about task pid's namespaces cannot be dumped: for the root, its
 * own namespaces ckpt cannot make again; for any other task, namespaces
 * that are not the root's (PID namespaces are checked on the whole tree). */
export function namespaceBlockers(pid: number, root: number): Blocker[] {
  const out: Blocker[] = [];
  const add = (kind: string, message: string) => out.push({ pid, kind, message });
  if (pid !== root) {
    for (const k of NS_KINDS) {
      if (k === "pid") continue;
      const want = nsOf(root, k);
      const got = nsOf(pid, k);
      if (got !== want) {
        add(
          `${k} namespace`,
          `pid ${pid} is in another ${NS_NAMES[k]} namespace (${got}) than the tree's root pid ` +
            `${root} (${want}); a tree whose tasks are in different ${NS_NAMES[k]} namespaces ` +
            `cannot be dumped yet`,
        );
      }
    }
    return out;
  }
  const own = ownKinds(pid);
  for (const k of own) {
    if (!DUMPED_KINDS.includes(k)) {
      add(
        `${k} namespace`,
        `pid ${pid} is in another ${NS_NAMES[k]} namespace than ckpt (${nsOf(pid, k)}); ` +
          `${NS_NAMES[k]} namespaces cannot be dumped yet: dump a tree that shares ckpt's`,
      );
    }
  }
  if (own.includes("user") && !own.includes("pid")) {
    // Forked from inside its user namespace, no task could get its pid in
    // ckpt's PID namespace back.
    add(
      "user namespace",
      `pid ${pid} has a user namespace of its own but shares ckpt's PID namespace; such a ` +
        `tree cannot be restored with its pids: give it a PID namespace of its own too`,
    );
  }
  for (
    const check of [
      checkPidRoot,
      checkTimeRoot,
      own.includes("cgroup") ? checkCgroupRoot : undefined,
    ]
  ) {
    try {
      check?.(pid);
    } catch (err) {
      if (!(err instanceof DumpError)) throw err;
      add("namespace", err.message);
    }
  }
  return out;
}

/** Each task's pid (and each thread's tid) at every PID namespace level,
 * put into its core. */
export interface PidLevels {
  apply(core: TaskCore): TaskCore;
}

/** The frozen tree (root first, parents before children): every task must
 * be in the root's PID namespace or be the init of one nested in it. */
export function treePidLevels(
  tree: { pid: number; zombie: boolean }[],
  blockers: Blocker[],
): PidLevels {
  let levels = new Map<number, number[]>();
  try {
    levels = checkPidTree(
      tree.map((t) => ({ pid: t.pid, ppid: Number(readStat(t.pid).field(4)), zombie: t.zombie })),
    );
  } catch (err) {
    if (!(err instanceof DumpError)) throw err;
    blockers.push({ pid: tree[0].pid, kind: "PID namespace", message: err.message });
  }
  return {
    apply(core) {
      const l = levels.get(core.pid) ?? [];
      if (l.length > 1) core.nsPids = l;
      for (const th of core.threads) {
        const t = nsPids(core.pid, th.tid);
        if (t.length > 1) th.nsTids = t;
      }
      return core;
    },
  };
}

/** What the root's own namespaces hold, read while the tree is frozen;
 * also the tree's clocks (for a restore into a new time namespace). What
 * cannot be read is a blocker (and then there is no image). */
export function collectNamespaces(
  root: number,
  treePids: number[],
  blockers: Blocker[],
  net: NetDumpOptions = {},
): NamespacesImage | undefined {
  try {
    return readNamespaces(root, treePids, net, blockers);
  } catch (err) {
    if (!(err instanceof DumpError)) throw err;
    blockers.push({ pid: root, kind: "namespace", message: err.message });
    return undefined;
  }
}

function readNamespaces(
  root: number,
  treePids: number[],
  net: NetDumpOptions,
  blockers: Blocker[],
): NamespacesImage {
  const t0 = performance.now();
  const kinds = ownKinds(root);
  const img = create(NamespacesImageSchema, {
    pid: kinds.includes("pid"),
    clocks: treeClocks(root),
  });
  if (kinds.includes("uts")) img.uts = dumpUts(root);
  if (kinds.includes("ipc")) img.ipc = dumpIpc(root);
  if (kinds.includes("time")) img.time = readOffsets(root);
  if (kinds.includes("user")) img.user = dumpUser(root);
  if (kinds.includes("cgroup")) img.cgroup = dumpCgroup(root);
  if (kinds.includes("net")) {
    img.net = dumpNet(
      root,
      net,
      (message) => blockers.push({ pid: root, kind: "network namespace", message }),
    );
  }
  if (kinds.length) {
    log.info(
      `pid ${root}: own ${kinds.map((k) => NS_NAMES[k]).join(", ")} namespace(s), read in ${
        formatMs(performance.now() - t0)
      }`,
    );
    sharedWithOthers(root, kinds, new Set(treePids));
  }
  return img;
}

/** Says which processes outside the tree are in its namespaces too (the
 * launcher that made them, often): they keep them, and do not come back. */
function sharedWithOthers(root: number, kinds: NsKind[], tree: Set<number>): void {
  const want = new Map(kinds.filter((k) => k !== "pid").map((k) => [k, nsOf(root, k)]));
  const others = new Map<NsKind, number[]>();
  for (const e of Deno.readDirSync("/proc")) {
    const p = Number(e.name);
    if (!Number.isInteger(p) || p <= 0 || tree.has(p)) continue;
    for (const [k, ns] of want) {
      if (nsOf(p, k) === ns) others.set(k, [...(others.get(k) ?? []), p]);
    }
  }
  for (const [k, pids] of others) {
    log.info(
      `the ${NS_NAMES[k]} namespace of pid ${root} is also used by pid(s) ${
        pids.slice(0, 8).join(", ")
      }${pids.length > 8 ? " …" : ""}, outside the tree: they are not dumped`,
    );
  }
}
