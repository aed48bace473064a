// POSIX timers (timer_create) of a real program across dump and restore: the
// same ids, clocks, sigev values and thread targets, still firing at their
// periods, with the time left of a one-shot timer kept.
import { assert, assertEquals, assertStringIncludes } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  startSession,
  tempDir,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";

type Report = Record<string, number>;

function reports(log: string): Report[] {
  return log.split("\n").filter((l) => l.startsWith("report ")).map((l) =>
    Object.fromEntries(
      [...l.matchAll(/(\w+)=(-?\d+)/g)].map((m) => [m[1], Number(m[2])]),
    )
  );
}

/** Asks for a report and returns it. */
async function report(pid: number, log: string): Promise<Report> {
  const n = reports(readText(log)).length;
  Deno.kill(pid, "SIGUSR1");
  await until("a report", () => reports(readText(log)).length > n);
  return reports(readText(log))[n];
}

function rate(a: Report, b: Report, key: string, ms: number): number {
  return (b[key] - a[key]) / (ms / 1000);
}

Deno.test("POSIX timers keep their ids, clocks, sigev values and thread targets, and fire at their periods", async () => {
  const dir = await tempDir("ptimers");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/ptimers`, log, "2500"]);
  try {
    await until("ptimers start", () => readText(log).includes("start"));
    await new Promise((r) => setTimeout(r, 300));
    const r0 = await report(p.pid, log);
    assertEquals(r0.bad, 0);
    assert(r0.na > 0 && r0.nb > 0 && r0.nc > 0, JSON.stringify(r0));
    // Ids, signal and 64-bit sigev value, notification and its thread, clock.
    const before = readText(`/proc/${p.pid}/timers`);
    assertStringIncludes(before, "signal: 35/1122334455667788");
    assertStringIncludes(before, `notify: signal/tid.${r0.btid}`);

    const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(d.code, 0, d.stderr);
    await p.status;
    await until(`pid ${p.pid} free`, () => gone(p.pid));
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assert(alive(p.pid));
    assertEquals(readText(`/proc/${p.pid}/timers`), before, "the same timers, as /proc shows them");

    const t1 = performance.now();
    const r1 = await report(p.pid, log);
    for (const k of ["a", "b", "d", "btid"]) assertEquals(r1[k], r0[k], k);
    assertEquals(r1.bad, 0, "every delivery had its timer's id and sigev value");
    assertEquals(r1.nd, 0, "the one-shot timer has not fired yet");
    assert(r1.dleft > 0 && r1.dleft < r0.dleft, `time left ${r1.dleft} (was ${r0.dleft})`);
    assert(r1.eleft > 0 && r1.eleft <= 1000, `SIGEV_NONE timer left ${r1.eleft}`);
    assertEquals(r1.farmed, 0, "the never-armed timer is still disarmed");

    await new Promise((r) => setTimeout(r, 1000));
    const r2 = await report(p.pid, log);
    const ms = performance.now() - t1;
    // 50, 70 and 40 ms periods: 20, 14.3 and 25 a second (a loaded machine
    // delivers late, never more often).
    const a = rate(r1, r2, "na", ms), b = rate(r1, r2, "nb", ms), c = rate(r1, r2, "nc", ms);
    assert(a > 12 && a < 22, `timer A fired ${a}/s`);
    assert(b > 8 && b < 16, `timer B fired ${b}/s`);
    assert(c > 14 && c < 27, `timer C (SIGEV_THREAD) fired ${c}/s`);
    assertEquals(r2.seen, r0.btid, "SIGEV_THREAD_ID timer signals its own thread");
    assertEquals(r2.bad, 0);

    // The one-shot timer fires when its time left runs out, not before.
    let fired = 0;
    await until(
      "the one-shot timer fires",
      async () => {
        if ((await report(p.pid, log)).nd === 0) return false;
        fired = performance.now() - t1;
        return true;
      },
      6000,
      50,
    );
    assert(fired > r1.dleft - 150, `fired after ${fired} ms, ${r1.dleft} ms were left`);
    assert(fired < r1.dleft + 1500, `fired after ${fired} ms, ${r1.dleft} ms were left`);
    assertEquals((await report(p.pid, log)).bad, 0);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a timer on the CPU clock of an unnamed thread is refused at dump, naming it, and the process runs on", async () => {
  const dir = await tempDir("ptimers-refused");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/ptimers`, log, "2500", "threadcpu"]);
  try {
    await until("ptimers start", () => readText(log).includes("start"));
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(r.code, 1);
    assertEquals(r.stderr.split("\n").length, 2, r.stderr);
    assertStringIncludes(r.stderr, `ckpt: pid ${p.pid}: POSIX timer 6 counts the CPU time`);
    const r1 = await report(p.pid, log);
    await new Promise((r) => setTimeout(r, 200));
    const r2 = await report(p.pid, log);
    assert(r2.na > r1.na, "its timers still fire");
    assertEquals(r2.bad, 0);
    const again = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(again.code, 1, "nothing restore would accept was left");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
