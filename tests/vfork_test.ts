// A parent blocked in vfork() for a child that has not exec'd cannot stop
// for ptrace until the child goes on: the dump refuses it at once, with what
// to do, and leaves both running.
import { assert, assertEquals, assertLess, assertMatch } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { alive, readText, startSession, tempDir, until, WORKLOADS } from "./helpers/proc.ts";
import { killAll, taskStat } from "./helpers/tree.ts";

Deno.test("a parent waiting in vfork() is refused at once, and both keep running", async () => {
  const dir = await tempDir("vfork");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/vforker`, log]);
  let child = 0;
  try {
    await until("vfork child", () => readText(log).includes("child"));
    child = +/child (\d+)/.exec(readText(log))![1];
    await until("parent blocked", () => taskStat(p.pid).state === "D");
    const t0 = performance.now();
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`], {
      timeoutMs: 20_000,
    });
    const ms = performance.now() - t0;
    assertEquals(r.code, 1, r.stderr);
    assertMatch(
      r.stderr,
      new RegExp(`ckpt: pid ${p.pid} is waiting in vfork\\(\\) for its child ${child}`),
    );
    assertLess(ms, 5000, "refused at once, not after a long wait");
    assert(alive(p.pid) && alive(child), "both still there");
    assertEquals(taskStat(p.pid).state, "D", "the parent is still in vfork()");
    // The child dumped alone shares its parent's memory: refused too.
    const c = await runCkpt(
      ["dump", "-t", String(child), "-D", `${dir}/images2`, "--shell-job"],
      { timeoutMs: 20_000 },
    );
    assertEquals(c.code, 1, c.stderr);
    assertMatch(
      c.stderr,
      new RegExp(`pid ${p.pid} is waiting in vfork\\(\\) for its child ${child}`),
    );
    assert(alive(child), "the child still runs");
    // Once the child exits the parent goes on: nothing was left attached.
    Deno.kill(child, "SIGKILL");
    await until("parent back", () => readText(log).includes("parent back"));
  } finally {
    await killAll(child ? [p.pid, child] : [p.pid]);
    await Deno.remove(dir, { recursive: true });
  }
});
