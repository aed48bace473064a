// A refused dump names every blocker of the tree at once, and
// `dump --dry-run` reports them (and what would be saved) without writing
// anything, the tree running on.
import { assert, assertEquals, assertStringIncludes } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import {
  alive,
  killAndForget,
  readText,
  startSession,
  tempDir,
  threadState,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";

interface Blocker {
  pid: number;
  fd?: number;
  kind?: string;
  message: string;
}

Deno.test("dump --dry-run lists every blocker of a tree (two fds, a task in another namespace) and what would be saved; dump refuses with all of them", async () => {
  const dir = await tempDir("dryrun");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/blockers`, dir]);
  let child = 0;
  try {
    await until("workload ready", () => readText(log).includes("ready"));
    const m = /child=(\d+) pidfd=(\d+) ring=(\d+) ep=(\d+) t=(\d+)/.exec(readText(log))!;
    child = Number(m[1]);
    const [pidfd, ring, ep, t] = [2, 3, 4, 5].map((i) => Number(m[i]));

    const r = await runCkpt(["dump", "-t", String(p.pid), "--dry-run", "--json"]);
    assertEquals(r.code, 1, `blocked: exit status 1 (${r.stderr})`);
    const rep = JSON.parse(r.stdout);
    const blockers: Blocker[] = rep.blockers;
    assertEquals(blockers.length, 3, JSON.stringify(blockers));
    const at = (pid: number, fd?: number) => blockers.find((b) => b.pid === pid && b.fd === fd);
    assertEquals(at(p.pid, pidfd)?.kind, "pidfd");
    assertEquals(at(p.pid, ring)?.kind, "an io_uring instance");
    assertEquals(at(child)?.kind, "uts namespace");
    for (const b of blockers) assert(b.message.length > 20, b.message);
    // What would be saved: both tasks, the epoll and timerfd among the fds.
    assertEquals(rep.tasks.map((x: { pid: number }) => x.pid), [p.pid, child]);
    const fds = rep.tasks[0].fds as { fd: number; kind: string }[];
    assertEquals(fds.find((f) => f.fd === ep)?.kind, "epoll");
    assertEquals(fds.find((f) => f.fd === t)?.kind, "timerfd");
    assert(rep.memoryBytes > 0);
    assert(alive(p.pid) && alive(child), "the tree runs on");
    assertEquals(threadState(p.pid), "S", "not left stopped");

    // The same for a person, and with -D nothing is created.
    const text = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/img`, "--dry-run"]);
    assertEquals(text.code, 1);
    assertStringIncludes(text.stdout, "nothing written, the tree runs on");
    assertStringIncludes(text.stdout, "3 thing(s) block the dump:");
    assertStringIncludes(text.stdout, `[pid ${p.pid}, fd ${pidfd}, pidfd]`);
    assertStringIncludes(text.stdout, `[pid ${child}, uts namespace]`);
    let made = true;
    try {
      Deno.statSync(`${dir}/img`);
    } catch {
      made = false;
    }
    assertEquals(made, false, "a dry run makes no images directory");

    // A real dump refuses with every blocker at once, the tree left running.
    const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(d.code, 1);
    assertStringIncludes(d.stderr, "3 things in this tree cannot be dumped");
    for (const what of ["a pidfd", "an io_uring instance", "UTS namespace"]) {
      assertStringIncludes(d.stderr, what);
    }
    assert(alive(p.pid) && alive(child), "the tree runs on");
  } finally {
    await killAndForget(p.pid);
    if (child) await killAndForget(child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dump --dry-run of a tree ckpt can save: exit status 0, the tree running on", async () => {
  const dir = await tempDir("dryrun-ok");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/anonfdwl`, dir]);
  try {
    await until("workload start", () => readText(log).includes("start"));
    const r = await runCkpt(["dump", "-t", String(p.pid), "--dry-run"]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    assertStringIncludes(r.stdout, "nothing blocks the dump");
    assertStringIncludes(r.stdout, "timerfd 5");
    assertStringIncludes(r.stdout, "signalfd 1");
    assert(alive(p.pid));
    // It runs on: it answers a signal.
    Deno.kill(p.pid, "SIGUSR1");
    await until("reads", () => readText(log).includes("read "));
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
