// Cgroup hierarchies as ckpt sees them: which cgroup a task or thread is in
// (/proc/PID/cgroup, one line per hierarchy), where each hierarchy is mounted
// in ckpt's mount namespace, and file access inside one. A hierarchy is named
// as /proc/PID/cgroup names it: its v1 controllers ("cpu", "cpu,cpuacct",
// "name=systemd"), or "" for cgroup v2.
//
// Every access goes through a directory fd of the mount, checked to be a
// cgroup filesystem, and paths below it are resolved beneath it without
// symlinks or mount crossings: a cgroup path from an image can only ever
// name a cgroup of that hierarchy.
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import { AT_REMOVEDIR, openat2, unlinkat } from "../native/integrity.ts";
import { NoProcess, readProcText } from "../proc/read.ts";

const RESOLVE_BENEATH_STRICT = 1 | 2 | 4 | 8; // NO_XDEV | NO_MAGICLINKS | NO_SYMLINKS | BENEATH
const CGROUP_SUPER_MAGIC = 0x27e0ebn, CGROUP2_SUPER_MAGIC = 0x63677270n;

/** hierarchy name → cgroup path, as in /proc/PID/cgroup. */
export type Membership = Map<string, string>;

export function parseMembership(text: string): Membership {
  const out: Membership = new Map();
  for (const line of text.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (m) out.set(m[2], m[3]);
  }
  return out;
}

/** The cgroups of a process (its leader) or of one of its threads. */
export function readMembership(pid: number | "self", tid?: number): Membership {
  const rest = tid === undefined || tid === pid ? "cgroup" : `task/${tid}/cgroup`;
  return parseMembership(readProcText(pid, rest));
}

/** Like readMembership, undefined when the task is gone. */
export function tryMembership(pid: number, tid?: number): Membership | undefined {
  try {
    return readMembership(pid, tid);
  } catch (err) {
    if (err instanceof NoProcess || err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

export const isV2 = (name: string): boolean => name === "";

/** A hierarchy's name for people: "cpu,cpuacct", "cgroup2". */
export function shown(name: string): string {
  return isV2(name) ? "cgroup2" : name;
}

/** The parts a hierarchy name is made of, order-free (the kernel and mount
 * options may list co-mounted controllers in different orders). */
export function nameKey(name: string): string {
  return name.split(",").filter(Boolean).sort().join(",");
}

/** True when a controller name given by a user (cpu, name=systemd, unified
 * or cgroup2 for v2) names this hierarchy or one of its controllers. */
export function names(hierarchy: string, controller: string): boolean {
  if (isV2(hierarchy)) {
    return controller === "unified" || controller === "cgroup2" || controller === "";
  }
  return hierarchy.split(",").includes(controller);
}

/** Where each hierarchy is mounted here (only whole-hierarchy mounts, whose
 * root is the hierarchy's root), by nameKey. */
export function hierarchyMounts(): Map<string, string> {
  const known = new Set(
    Deno.readTextFileSync("/proc/cgroups").split("\n").slice(1).map((l) => l.split("\t")[0])
      .filter(Boolean),
  );
  const out = new Map<string, string>();
  for (const line of readProcText("self", "mountinfo").split("\n")) {
    const [pre, post] = line.split(" - ");
    if (!post) continue;
    const f = pre.split(" ");
    const [fstype, , opts] = post.split(" ");
    if (f[3] !== "/" || (fstype !== "cgroup" && fstype !== "cgroup2")) continue;
    const point = unescapeMount(f[4]);
    if (fstype === "cgroup2") {
      if (!out.has("")) out.set("", point);
      continue;
    }
    const parts = (opts ?? "").split(",").filter((o) => known.has(o) || o.startsWith("name="));
    const key = nameKey(parts.join(","));
    if (key && !out.has(key)) out.set(key, point);
  }
  return out;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/** A cgroup path is "/" or "/a/b": no empty, "." or ".." part, nothing the
 * kernel would not accept as a cgroup's name. */
export function validPath(p: string): boolean {
  if (p === "/") return true;
  if (!p.startsWith("/") || p.length > 4096 || p.endsWith("/")) return false;
  return p.slice(1).split("/").every((c) =>
    c.length > 0 && c.length <= 255 && c !== "." && c !== ".." && !/[\0\n]/.test(c)
  );
}

/** p is q or below it. */
export function under(p: string, q: string): boolean {
  return q === "/" || p === q || p.startsWith(`${q}/`);
}

/** p below q, as a path relative to q ("" for q itself). */
export function relativeTo(p: string, q: string): string {
  if (p === q) return "";
  return q === "/" ? p.slice(1) : p.slice(q.length + 1);
}

export function join(base: string, rel: string): string {
  if (!rel) return base;
  return base === "/" ? `/${rel}` : `${base}/${rel}`;
}

export function parentOf(p: string): string {
  const i = p.lastIndexOf("/");
  return i <= 0 ? "/" : p.slice(0, i);
}

/** The deepest cgroup at or above every path. */
export function commonAncestor(paths: string[]): string {
  let common = paths[0] ?? "/";
  for (const p of paths.slice(1)) while (!under(p, common)) common = parentOf(common);
  return common;
}

/** One hierarchy's mount, opened: every path is a cgroup path ("/a/b"). */
export class CgroupFs {
  private constructor(
    readonly name: string,
    readonly mount: string,
    private readonly fd: number,
  ) {}

  /** Opens the mount of hierarchy `name`, or undefined when it is not
   * mounted here. */
  static open(name: string, mounts = hierarchyMounts()): CgroupFs | undefined {
    const mount = mounts.get(nameKey(name));
    if (mount === undefined) return undefined;
    return CgroupFs.at(name, mount);
  }

  static at(name: string, mount: string): CgroupFs {
    const fd = fdops.open(mount, O.PATH | O.DIRECTORY | O.CLOEXEC);
    const magic = fdops.fstatfs(fd).type;
    if (magic !== (isV2(name) ? CGROUP2_SUPER_MAGIC : CGROUP_SUPER_MAGIC)) {
      fdops.close(fd);
      throw new Error(`${mount} is not a ${shown(name)} cgroup filesystem`);
    }
    return new CgroupFs(name, mount, fd);
  }

  close(): void {
    fdops.close(this.fd);
  }

  /** Where a cgroup (or a file of it) is, for messages. */
  where(path: string, file?: string): string {
    const dir = path === "/" ? this.mount : `${this.mount}${path}`;
    return file ? `${dir}/${file}` : dir;
  }

  private rel(path: string, file?: string): string {
    const r = path === "/" ? "" : path.slice(1);
    if (file === undefined) return r || ".";
    return r ? `${r}/${file}` : file;
  }

  private openIn(path: string, file: string | undefined, flags: number): number {
    return openat2(this.fd, this.rel(path, file), flags | O.CLOEXEC, 0, RESOLVE_BENEATH_STRICT);
  }

  exists(path: string, file?: string): boolean {
    try {
      fdops.close(this.openIn(path, file, O.PATH));
      return true;
    } catch (err) {
      if (err instanceof NativeError && err.errno === 2) return false;
      throw err;
    }
  }

  /** A property file's content, trailing newline dropped; undefined when
   * this cgroup has no such file. (Reads go through the mount's fd: a
   * cgroup filesystem has no symlinks to follow.) */
  read(path: string, file: string): string | undefined {
    try {
      return Deno.readTextFileSync(`/proc/self/fd/${this.fd}/${this.rel(path, file)}`)
        .replace(/\n$/, "");
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw err;
    }
  }

  /** The names of a cgroup's files and children. */
  list(path: string): Set<string> {
    const out = new Set<string>();
    for (const e of Deno.readDirSync(`/proc/self/fd/${this.fd}/${this.rel(path)}`)) out.add(e.name);
    return out;
  }

  /** One write(2) of value: the kernel parses each write on its own. */
  write(path: string, file: string, value: string): void {
    const n = this.openIn(path, file, O.WRONLY);
    try {
      fdops.write(n, new TextEncoder().encode(value));
    } finally {
      fdops.close(n);
    }
  }

  mkdir(path: string): void {
    Deno.mkdirSync(`/proc/self/fd/${this.fd}/${this.rel(path)}`, { mode: 0o755 });
  }

  rmdir(path: string): void {
    unlinkat(this.fd, this.rel(path), AT_REMOVEDIR);
  }

  stat(path: string, file?: string): { mode: number; uid: number; gid: number } | undefined {
    try {
      const st = Deno.statSync(`/proc/self/fd/${this.fd}/${this.rel(path, file)}`);
      return { mode: (st.mode ?? 0) & 0o7777, uid: st.uid ?? 0, gid: st.gid ?? 0 };
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw err;
    }
  }

  /** Owner and mode of the cgroup directory or one of its files. */
  setPerms(path: string, file: string | undefined, p: { mode: number; uid: number; gid: number }) {
    const n = this.openIn(path, file, file === undefined ? O.RDONLY | O.DIRECTORY : O.RDONLY);
    try {
      fdops.fchown(n, p.uid, p.gid);
      fdops.fchmod(n, p.mode);
    } finally {
      fdops.close(n);
    }
  }
}
