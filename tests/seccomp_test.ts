// Seccomp survives the dump and comes back enforced: a strict-mode task is
// not killed by the dump's own system calls, and a sandboxed process gets
// its filters back per thread, shared as they were — forbidden calls still
// fail with the filter's errno or kill the process.
import { assert, assertEquals, assertMatch } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { readText, startSession, tempDir, until, WORKLOADS } from "./helpers/proc.ts";
import { dumpTree, killAll, restoreTree, taskStat } from "./helpers/tree.ts";

const EACCES = 13, EPERM = 1, E2BIG = 7, SIGSYS = 31;

function reports(log: string): string[] {
  return [...log.matchAll(/^report .*$/gm)].map((m) => m[0]).sort();
}

Deno.test("seccomp: strict mode survives the dump; filters come back per thread, shared, enforced", async () => {
  const dir = await tempDir("seccomp");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/seccomp`, log]);
  let pids: number[] = [];
  try {
    await until("ready", () => readText(log).includes("ready"));
    const r = Object.fromEntries(
      [...readText(log).matchAll(/(\w+)=(\d+)/g)].map((m) => [m[1], +m[2]]),
    );
    pids = [r.sandboxed, r.strict];
    await until("strict mode on", () => /Seccomp:\s+1/.test(readText(`/proc/${r.strict}/status`)));
    await until(
      "three threads",
      () => Deno.readDirSync(`/proc/${r.sandboxed}/task`).toArray().length === 3,
    );
    Deno.kill(r.sandboxed, "SIGUSR1");
    await until("reports before", () => reports(readText(log)).length === 3);
    const before = reports(readText(log));
    assertEquals(before, [
      `report main uname=${EACCES} getcwd=0 filters=2 nnp=1`,
      `report t1 uname=${EACCES} getcwd=${EPERM} filters=3 nnp=1`,
      `report t2 uname=${EACCES} getcwd=${EPERM} filters=3 nnp=1`,
    ]);

    // Without the fix, the dump's first injected call killed the strict task.
    await dumpTree(p.pid, p.status, `${dir}/images`, pids);
    assert(!readText(log).includes("died"), "nothing died during the dump");
    const core = JSON.parse(
      (await runCkpt(["show", "--compact", `${dir}/images/core-${r.sandboxed}.img`])).stdout,
    ).payload;
    assertEquals(core.seccomp_filters.length, 3, "three filters, F2 saved once for T1 and T2");

    await restoreTree(`${dir}/images`);
    assertMatch(readText(`/proc/${r.strict}/status`), /Seccomp:\s+1/);
    Deno.kill(p.pid, "SIGUSR1"); // a byte through the strict task
    await until("strict echo", () => readText(log).includes("strict echo q"));

    Deno.kill(r.sandboxed, "SIGUSR1");
    await until("reports after", () => reports(readText(log)).length === 6);
    const after = reports(readText(log)).filter((l, i, a) => a.indexOf(l) !== i || true);
    for (const line of before) {
      assertEquals(after.filter((l) => l === line).length, 2, `after restore too: ${line}`);
    }
    // TSYNC from T2 works only if T1 still shares T2's filters.
    Deno.kill(r.sandboxed, "SIGUSR2");
    await until("tsync", () => readText(log).includes("getpriority main"));
    assertMatch(readText(log), /tsync r=0 errno=0/);
    assertMatch(readText(log), new RegExp(`getpriority main errno=${E2BIG}`));

    // Forbidden calls still kill: sysinfo the filtered one, getpid the strict one.
    Deno.kill(r.sandboxed, "SIGHUP");
    Deno.kill(p.pid, "SIGUSR2");
    await until(
      "both died",
      () => readText(log).includes("died sandboxed") && readText(log).includes("died strict"),
    );
    assertMatch(readText(log), new RegExp(`died sandboxed sig=${SIGSYS}`));
    assertMatch(readText(log), /died strict sig=9/);
    assertEquals(taskStat(p.pid).state !== "Z", true, "the root lives on");
  } finally {
    await killAll([p.pid, ...pids]);
    await Deno.remove(dir, { recursive: true });
  }
});
