// cgroups.img checked before anything is made: names and paths well formed,
// every member and recorded cgroup below its hierarchy's root, settings only
// of the kinds restore writes, and every task's set in range.
import type { CgroupsImage, TaskCore } from "../gen/ckpt/images_pb.ts";
import { under, validPath } from "./hierarchy.ts";
import { refusedProp } from "./props.ts";

const LIMITS = { hierarchies: 64, dirs: 65536, props: 256, value: 65536, sets: 1 << 20 };
const DELEGATION = new Set(["cgroup.procs", "cgroup.threads", "tasks", "cgroup.subtree_control"]);

export function validateCgroups(
  img: CgroupsImage,
  cores: TaskCore[],
  fail: (why: string) => never,
): void {
  const hs = img.hierarchies;
  if (hs.length > LIMITS.hierarchies) fail(`${hs.length} cgroup hierarchies`);
  const seen = new Set<string>();
  let dirs = 0;
  for (const h of hs) {
    const what = `hierarchy ${JSON.stringify(h.name.slice(0, 40))}`;
    if (
      !/^$|^(name=[A-Za-z0-9_.-]+|[a-z0-9_]+)(,(name=[A-Za-z0-9_.-]+|[a-z0-9_]+))*$/.test(h.name)
    ) {
      fail(`${what}: not a cgroup hierarchy name`);
    }
    if (seen.has(h.name)) fail(`${what} listed twice`);
    seen.add(h.name);
    if (!validPath(h.own) || !validPath(h.root)) fail(`${what}: malformed own or root cgroup path`);
    dirs += h.dirs.length;
    if (dirs > LIMITS.dirs) fail(`more than ${LIMITS.dirs} cgroups`);
    const known = new Set<string>();
    for (const [i, d] of h.dirs.entries()) {
      const at = `${what}, cgroup ${JSON.stringify(d.path.slice(0, 80))}`;
      if (!validPath(d.path) || !under(d.path, h.root)) {
        fail(`${at}: malformed or outside its root`);
      }
      if (
        i === 0 ? d.path !== h.root : !known.has(d.path.slice(0, d.path.lastIndexOf("/")) || "/")
      ) {
        fail(`${at}: listed before its parent`);
      }
      if (known.has(d.path)) fail(`${at}: listed twice`);
      known.add(d.path);
      if (d.mode > 0o7777) fail(`${at}: mode ${d.mode.toString(8)}`);
      if (d.props.length > LIMITS.props) fail(`${at}: ${d.props.length} properties`);
      for (const p of d.props) {
        const why = refusedProp(h.name, p.name);
        if (why) fail(`${at}: ${JSON.stringify(p.name.slice(0, 60))} ${why}`);
        if (p.value.length > LIMITS.value || p.value.includes("\0")) {
          fail(`${at}: value of ${p.name} too long or not text`);
        }
      }
      for (const f of d.files) {
        if (!DELEGATION.has(f.name) || f.mode > 0o7777) fail(`${at}: file ${f.name} not expected`);
      }
    }
    if (h.dirs.length === 0) fail(`${what}: no cgroups`);
  }
  if (img.sets.length > LIMITS.sets) fail(`${img.sets.length} cgroup sets`);
  for (const [i, s] of img.sets.entries()) {
    if (s.paths.length !== hs.length) fail(`cgroup set ${i + 1}: ${s.paths.length} paths`);
    s.paths.forEach((p, k) => {
      const h = hs[k];
      if (!validPath(p) || !h.dirs.some((d) => d.path === p)) {
        fail(`cgroup set ${i + 1}: ${JSON.stringify(p.slice(0, 80))} is not a recorded cgroup`);
      }
    });
  }
  checkSets(cores, img.sets.length, fail);
}

/** Every task's and thread's set is one the image has (0: none). */
export function checkSets(cores: TaskCore[], sets: number, fail: (why: string) => never): void {
  for (const c of cores) {
    if (c.cgroupSet > sets) fail(`pid ${c.pid}: cgroup set ${c.cgroupSet} does not exist`);
    for (const th of c.threads) {
      if (th.cgroupSet > sets) fail(`thread ${th.tid}: cgroup set ${th.cgroupSet} does not exist`);
    }
  }
}
