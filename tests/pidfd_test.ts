// pidfds: of a running child, a zombie, a reaped child, the holder itself and
// one its child inherited come back naming the same processes, checked by
// what the restored program does with them (signals, poll, waitid); one of
// a process outside the tree is refused at dump with the tree left running.
import { assertEquals, assertStringIncludes } from "../src/deps/std_assert.ts";
import { ROOT, runCkpt } from "./helpers/ckpt.ts";
import { alive, readText, startSession, tempDir, until } from "./helpers/proc.ts";
import { dumpTree, killAll, restoreTree } from "./helpers/tree.ts";

const PIDFDS = `${ROOT}/tests/workloads/pidfds.py`;

Deno.test("pidfds of a running child, a zombie, a reaped child and of itself work after restore: signals, poll and waitid reach the same processes", async () => {
  const dir = await tempDir("pidfd");
  const p = startSession(["python3", PIDFDS, dir]);
  let pids: number[] = [p.pid];
  try {
    await until("pidfds ready", () => readText(`${dir}/log`).includes("ready"));
    const m = /running=(\d+) zombie=(\d+) reaped=(\d+)/.exec(readText(`${dir}/log`))!;
    pids = [p.pid, Number(m[1]), Number(m[2])];
    await dumpTree(p.pid, p.status, `${dir}/images`, pids);
    await restoreTree(`${dir}/images`);
    Deno.writeTextFileSync(`${dir}/go`, "");
    await until("pidfds used", () => readText(`${dir}/log`).includes("done"));
    const log = readText(`${dir}/log`);
    assertStringIncludes(log, "child: parent pidfd alive\n");
    assertStringIncludes(log, "self nonblock=True cloexec=True\nself alive\n");
    assertStringIncludes(log, "reaped: gone readable=True\n");
    assertStringIncludes(log, `zombie: readable=True\nzombie: waited pid=${m[2]} status=7\n`);
    assertStringIncludes(log, "running: readable=False\nrunning: after TERM readable=True\n");
    assertStringIncludes(log, `running: waited pid=${m[1]} killed=True sig=15\n`);
  } finally {
    await killAll(pids);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a pidfd of a process outside the tree is refused at dump, naming fd and pid; the tree runs on", async () => {
  const dir = await tempDir("pidfd-out");
  const outside = new Deno.Command("sleep", { args: ["60"], stdin: "null", stdout: "null" })
    .spawn();
  const p = startSession(["python3", PIDFDS, dir, "outside", String(outside.pid)]);
  try {
    await until("pidfds ready", () => readText(`${dir}/log`).includes("ready"));
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(r.code, 1);
    assertStringIncludes(
      r.stderr,
      `a pidfd of pid ${outside.pid} (sleep), which is outside the tree`,
    );
    assertStringIncludes(r.stderr, `fd 8 of pid ${p.pid}`);
    assertEquals(alive(p.pid), true);
    Deno.writeTextFileSync(`${dir}/go`, "");
    await until("the tree ran on", () => readText(`${dir}/log`).includes("done"));
  } finally {
    outside.kill("SIGKILL");
    await outside.status;
    await killAll([p.pid]);
    await Deno.remove(dir, { recursive: true });
  }
});
