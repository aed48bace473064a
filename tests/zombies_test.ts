// Zombies come back as they were: pid, parent, process group, session, name
// and exit status (an exit code or the signal that killed it), and the
// parents that reap them after the restore get exactly that.
import { assert, assertEquals, assertMatch } from "../src/deps/std_assert.ts";
import { readText, startSession, tempDir, until, WORKLOADS } from "./helpers/proc.ts";
import { dumpTree, killAll, restoreTree, taskStat } from "./helpers/tree.ts";
import { runCkpt } from "./helpers/ckpt.ts";

function zombieLines(log: string) {
  return [...log.matchAll(/^zombie (\w+) (.*)$/gm)].map((m) => ({ name: m[1], rest: m[2] }));
}

Deno.test("zombies keep pid, group, session, name and exit status; parents wait for them after restore", async () => {
  const dir = await tempDir("zombies");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/zombies`, log]);
  let pids: number[] = [];
  try {
    await until(
      "zombies ready",
      () => readText(log).includes("ready") && zombieLines(readText(log)).length === 4,
    );
    const waiter = +/waiter=(\d+)/.exec(readText(log))![1];
    const before = new Map(zombieLines(readText(log)).map((z) => [z.name, z.rest]));
    const pidOf = (name: string) => +/pid=(\d+)/.exec(before.get(name)!)![1];
    pids = [waiter, ...["zexit7", "zsegv", "zsession", "zinner"].map(pidOf)];
    assertMatch(before.get("zexit7")!, new RegExp(`pgid=${pidOf("zexit7")} `), "its own group");
    assertMatch(
      before.get("zsession")!,
      new RegExp(`sid=${pidOf("zsession")} `),
      "its own session",
    );

    await dumpTree(p.pid, p.status, `${dir}/images`, pids);
    await restoreTree(`${dir}/images`);
    for (const name of ["zexit7", "zsegv", "zsession", "zinner"]) {
      const s = taskStat(pidOf(name));
      assertEquals(s.state, "Z", `${name} is a zombie again`);
      assertEquals(s.comm, name, `${name} keeps its name`);
    }
    assertEquals(taskStat(waiter).state !== "Z", true, "the waiter runs");

    Deno.kill(waiter, "SIGUSR1");
    Deno.kill(p.pid, "SIGUSR1");
    await until(
      "reaped",
      () => readText(log).includes("done") && readText(log).includes("reaped zinner"),
    );
    const text = readText(log);
    const after = zombieLines(text).slice(4);
    assertEquals(after.length, 4);
    for (const z of after) {
      assertEquals(z.rest, before.get(z.name), `${z.name}: the parent sees it as it was`);
    }
    // exit(7) is 0x700, a SIGSEGV death 0xb, exit(3) 0x300, exit(5) 0x500.
    assertMatch(
      text,
      new RegExp(`reaped zexit7 pid=${pidOf("zexit7")} r=${pidOf("zexit7")} status=0x700`),
    );
    assertMatch(
      text,
      new RegExp(`reaped zsegv pid=${pidOf("zsegv")} r=${pidOf("zsegv")} status=0xb\n`),
    );
    assertMatch(
      text,
      new RegExp(`reaped zsession pid=${pidOf("zsession")} r=${pidOf("zsession")} status=0x300`),
    );
    assertMatch(
      text,
      new RegExp(`reaped zinner pid=${pidOf("zinner")} r=${pidOf("zinner")} status=0x500`),
    );
    assert(!readText(`/proc/${pidOf("zexit7")}/stat`), "reaped for good");
  } finally {
    await killAll([p.pid, ...pids]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a shell running short-lived commands all the time is dumped every time: a vfork() of a moment is waited out, a child that exits while being frozen is dumped as the zombie it became", async () => {
  const dir = await tempDir("forker");
  const count = `${dir}/count`;
  // Each /bin/true lives a few hundred microseconds: the freeze meets them
  // being born and dying.
  const loop = `n=0; while :; do /bin/true; /bin/true; n=$((n+1)); echo $n > ${count}.t; ` +
    `mv ${count}.t ${count}; done`;
  const p = startSession(["sh", "-c", loop]);
  try {
    await until("looping", () => readText(count) !== "");
    for (let i = 0; i < 15; i++) {
      const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/img${i}`, "-R"]);
      assertEquals(r.code, 0, `dump ${i} failed: ${r.stderr}`);
      await Deno.remove(`${dir}/img${i}`, { recursive: true });
    }
    await dumpTree(p.pid, p.status, `${dir}/images`, [p.pid]);
    await restoreTree(`${dir}/images`);
    const at = Number(readText(count));
    await until("the restored shell loops on", () => Number(readText(count)) > at + 20);
  } finally {
    await killAll([p.pid]);
    await Deno.remove(dir, { recursive: true });
  }
});
