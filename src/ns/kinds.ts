// The kinds of namespace a task has (/proc/PID/ns/*), and which of them ckpt
// dumps and makes again. A namespace is named by its link, e.g. "ipc:[4026531839]".
import {
  CLONE_NEWCGROUP,
  CLONE_NEWIPC,
  CLONE_NEWNET,
  CLONE_NEWNS,
  CLONE_NEWPID,
  CLONE_NEWTIME,
  CLONE_NEWUSER,
  CLONE_NEWUTS,
} from "../native/ns.ts";

export type NsKind = "pid" | "uts" | "ipc" | "time" | "user" | "cgroup" | "mnt" | "net";

/** Every kind, in the order a restore makes them (a user namespace first:
 * the others are made owned by it). */
export const NS_KINDS: readonly NsKind[] = [
  "user",
  "pid",
  "uts",
  "ipc",
  "time",
  "cgroup",
  "mnt",
  "net",
];

/** Kinds a tree may have of its own (made again at restore). The others
 * must be ckpt's. */
export const DUMPED_KINDS: readonly NsKind[] = [
  "user",
  "pid",
  "uts",
  "ipc",
  "time",
  "cgroup",
  "net",
  "mnt",
];

export const CLONE_FLAG: Record<NsKind, number> = {
  pid: CLONE_NEWPID,
  uts: CLONE_NEWUTS,
  ipc: CLONE_NEWIPC,
  time: CLONE_NEWTIME,
  user: CLONE_NEWUSER,
  cgroup: CLONE_NEWCGROUP,
  mnt: CLONE_NEWNS,
  net: CLONE_NEWNET,
};

export const NS_NAMES: Record<NsKind, string> = {
  pid: "PID",
  uts: "UTS",
  ipc: "IPC",
  time: "time",
  user: "user",
  cgroup: "cgroup",
  mnt: "mount",
  net: "network",
};

/** The namespace of a kind a task is in (or, with `forChildren`, the one its
 * children will be in); undefined when the kernel has no such link (a kind
 * not built in, or pid_for_children before its init exists). */
export function nsOf(pid: number | "self", kind: NsKind, forChildren = false): string | undefined {
  try {
    return Deno.readLinkSync(`/proc/${pid}/ns/${kind}${forChildren ? "_for_children" : ""}`);
  } catch {
    return undefined;
  }
}

/** ckpt's own namespaces (of the calling thread, which is the one that acts). */
export function ownNs(kind: NsKind): string | undefined {
  try {
    return Deno.readLinkSync(`/proc/thread-self/ns/${kind}`);
  } catch {
    return undefined;
  }
}
