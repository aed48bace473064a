// Cgroup namespaces: a cgroup namespace is rooted at the cgroups its maker
// was in when it made it, one per hierarchy. Dump finds that root from the
// root task's cgroup paths seen from outside (ckpt's view) and from inside
// (a thread of ckpt that entered the namespace); restore moves the restored
// root into those cgroups before it makes its cgroup namespace. Which cgroups
// the tasks themselves are in, and the cgroups' settings, are not saved yet.
import { create } from "@bufbuild/protobuf";
import {
  type CgroupNamespace,
  CgroupNamespaceSchema,
  CgroupRootSchema,
} from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { readProcText } from "../proc/read.ts";
import { inNamespacesOf, readHere } from "./enter.ts";

/** hierarchy ("0::" for v2 is "", v1 its controllers) → path. */
function parseCgroups(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (m) out.set(m[2], m[3]);
  }
  return out;
}

function roots(pid: number): Map<string, string> {
  const outside = parseCgroups(readProcText(pid, "cgroup"));
  const inside = parseCgroups(
    inNamespacesOf(pid, ["cgroup"], () => readHere(`/proc/${pid}/cgroup`)),
  );
  const out = new Map<string, string>();
  for (const [h, abs] of outside) {
    const rel = inside.get(h) ?? "/";
    if (rel === "/" || rel === "") {
      out.set(h, abs);
      continue;
    }
    if (rel.startsWith("/..") || !abs.endsWith(rel)) {
      throw new DumpError(
        `pid ${pid} is outside its cgroup namespace's root (${h || "cgroup2"}: ${rel}); ` +
          `this cannot be dumped`,
      );
    }
    out.set(h, abs.slice(0, abs.length - rel.length) || "/");
  }
  return out;
}

export function checkCgroupRoot(pid: number): void {
  roots(pid);
}

export function dumpCgroup(pid: number): CgroupNamespace {
  return create(CgroupNamespaceSchema, {
    roots: [...roots(pid)].map(([hierarchy, path]) =>
      create(CgroupRootSchema, { hierarchy, path })
    ),
  });
}

/** Where each hierarchy is mounted in ckpt's mount namespace. */
function hierarchyMounts(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readProcText("self", "mountinfo").split("\n")) {
    const [pre, post] = line.split(" - ");
    if (!post) continue;
    const [fstype, , opts] = post.split(" ");
    const point = pre.split(" ")[4];
    const root = pre.split(" ")[3];
    if (root !== "/") continue;
    if (fstype === "cgroup2" && !out.has("")) out.set("", point);
    if (fstype !== "cgroup") continue;
    const known = ["rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "xattr"];
    const ctl = (opts ?? "").split(",").filter((o) =>
      !known.includes(o) && !o.startsWith("release_agent")
    );
    const key = ctl.join(",");
    if (!out.has(key)) out.set(key, point);
  }
  return out;
}

/** Moves pid into the cgroups the namespace is rooted at, where it is not
 * there already. */
export function enterCgroupRoots(pid: number, ns: CgroupNamespace): void {
  const current = parseCgroups(readProcText(pid, "cgroup"));
  const mounts = hierarchyMounts();
  for (const r of ns.roots) {
    if (current.get(r.hierarchy) === r.path) continue;
    const mount = mounts.get(r.hierarchy);
    const name = r.hierarchy || "cgroup2";
    if (!mount) {
      throw new RestoreError(
        `the cgroup namespace was rooted at ${r.path} of the ${name} hierarchy, which is not ` +
          `mounted here`,
      );
    }
    const dir = `${mount}${r.path === "/" ? "" : r.path}`;
    try {
      Deno.writeTextFileSync(`${dir}/cgroup.procs`, String(pid));
    } catch (err) {
      throw new RestoreError(
        `moving the restored root into cgroup ${dir} (its cgroup namespace's root) failed: ${
          err instanceof Deno.errors.NotFound ? "no such cgroup; create it" : (err as Error).message
        }`,
      );
    }
  }
}

export function validateCgroup(ns: CgroupNamespace, fail: (why: string) => never): void {
  for (const r of ns.roots) {
    if (!r.path.startsWith("/") || r.path.includes("/../") || r.path.endsWith("/..")) {
      fail(`cgroup namespace root ${JSON.stringify(r.path.slice(0, 80))} is malformed`);
    }
  }
}
