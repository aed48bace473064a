// Cgroups for tests: made below the test's own cgroup of each hierarchy (so
// nothing a test does escapes the limits the test itself runs under), and
// removed again, children first, once the processes in them are gone.
import { hierarchyMounts, nameKey } from "../../src/cgroup/hierarchy.ts";

/** Hierarchies as /proc/self/cgroup names them ("" is cgroup v2). */
export type H = "cpu" | "cpuset" | "memory" | "pids" | "freezer" | "";

export function ownCgroup(h: H, pid: number | "self" = "self"): string {
  for (const l of Deno.readTextFileSync(`/proc/${pid}/cgroup`).split("\n")) {
    const m = /^\d+:([^:]*):(.*)$/.exec(l);
    if (m && m[1] === h) return m[2];
  }
  throw new Error(`no ${h || "cgroup2"} line in /proc/${pid}/cgroup`);
}

/** The cgroup a thread is in. */
export function threadCgroup(h: H, pid: number, tid: number): string {
  for (const l of Deno.readTextFileSync(`/proc/${pid}/task/${tid}/cgroup`).split("\n")) {
    const m = /^\d+:([^:]*):(.*)$/.exec(l);
    if (m && m[1] === h) return m[2];
  }
  throw new Error(`no ${h || "cgroup2"} line for thread ${tid}`);
}

const mounts = hierarchyMounts();

export function mountOf(h: H): string {
  const m = mounts.get(nameKey(h));
  if (!m) throw new Error(`the ${h || "cgroup2"} hierarchy is not mounted`);
  return m;
}

/** Filesystem path of cgroup path p of hierarchy h. */
export function fsPath(h: H, p: string): string {
  return p === "/" ? mountOf(h) : `${mountOf(h)}${p}`;
}

export function join(a: string, b: string): string {
  return a === "/" ? `/${b}` : `${a}/${b}`;
}

export class TestCgroups {
  private readonly made: { h: H; path: string }[] = [];

  /** Makes cgroup `name` below the test's own one of h (and its parents
   * below that); returns its cgroup path. */
  make(h: H, name: string): string {
    const base = ownCgroup(h);
    let path = base;
    for (const part of name.split("/")) {
      path = join(path, part);
      try {
        Deno.mkdirSync(fsPath(h, path));
      } catch (err) {
        if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      }
      if (!this.made.some((m) => m.h === h && m.path === path)) this.made.push({ h, path });
    }
    return path;
  }

  /** A cgroup path below the test's own that the test will have made (a
   * restore makes it): removed at the end too. */
  expect(h: H, name: string): string {
    let path = ownCgroup(h);
    for (const part of name.split("/")) {
      path = join(path, part);
      if (!this.made.some((m) => m.h === h && m.path === path)) this.made.push({ h, path });
    }
    return path;
  }

  set(h: H, path: string, file: string, value: string): void {
    Deno.writeTextFileSync(`${fsPath(h, path)}/${file}`, value);
  }

  get(h: H, path: string, file: string): string {
    return Deno.readTextFileSync(`${fsPath(h, path)}/${file}`).trim();
  }

  exists(h: H, path: string): boolean {
    try {
      Deno.statSync(fsPath(h, path));
      return true;
    } catch {
      return false;
    }
  }

  /** Moves a process (cgroup.procs) or one thread (tasks, cgroup.threads). */
  move(h: H, path: string, id: number, thread = false): void {
    const file = !thread ? "cgroup.procs" : h === "" ? "cgroup.threads" : "tasks";
    this.set(h, path, file, String(id));
  }

  /** Removes one cgroup made so far (and what is below it). */
  async remove(h: H, path: string): Promise<void> {
    for (const m of [...this.made].reverse()) {
      if (m.h === h && (m.path === path || m.path.startsWith(`${path}/`))) await rmdir(m.h, m.path);
    }
  }

  async cleanup(): Promise<void> {
    for (const m of this.made.splice(0).reverse()) await rmdir(m.h, m.path);
  }
}

/** rmdir, retried while the cgroup empties (a killed task leaves it only
 * once it is reaped). */
async function rmdir(h: H, path: string): Promise<void> {
  const p = fsPath(h, path);
  for (let i = 0; i < 200; i++) {
    try {
      if (h === "freezer") Deno.writeTextFileSync(`${p}/freezer.state`, "THAWED");
      if (h === "") Deno.writeTextFileSync(`${p}/cgroup.freeze`, "0");
    } catch { /* gone */ }
    try {
      Deno.removeSync(p);
      return;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  throw new Error(`cgroup ${p} could not be removed`);
}
