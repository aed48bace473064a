// timerfds and signalfds restored: a relative timer keeps the time it had
// left (time spent dumped does not count), an absolute one its expiry,
// unread expirations are still there to read, and a signal sent before the
// dump is read from the signalfd after restore.
import { assert, assertEquals } from "../src/deps/std_assert.ts";
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

/** The fdinfo fields of a timerfd that must survive (not its time left). */
function timerShape(pid: number, n: number): string {
  const info = readText(`/proc/${pid}/fdinfo/${n}`);
  return ["flags", "clockid", "settime flags", "it_interval"]
    .map((k) => new RegExp(`^${k}:\\s*(.*)$`, "m").exec(info)?.[1]).join(" | ");
}

Deno.test("timerfd and signalfd: time left within a few ms, absolute expiry kept, unread expirations counted, a pending signal read after restore", async () => {
  const dir = await tempDir("anonfd");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/anonfdwl`, dir]);
  try {
    await until("workload start", () => readText(log).includes("start"));
    const fds = Object.fromEntries(
      [.../(\w+)=(\d+)/g[Symbol.matchAll](/start (.*)/.exec(readText(log))![1])].map((
        m,
      ) => [m[1], Number(m[2])]),
    );
    const timers = ["rel", "abs", "done", "per", "wall"];
    const shapes = timers.map((t) => timerShape(p.pid, fds[t]));
    // Pending for the signalfd (both blocked in the program).
    Deno.kill(p.pid, "SIGUSR2");
    await runCommand("kill", ["-s", "RTMIN+1", String(p.pid)]);
    const both = (1n << 11n) | (1n << 34n);
    await until("signals pending", () => {
      const m = /^ShdPnd:\s*([0-9a-f]+)$/m.exec(readText(`/proc/${p.pid}/status`));
      return m !== null && (BigInt(`0x${m[1]}`) & both) === both;
    });

    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
    await p.status;
    await until(`pid ${p.pid} free`, () => gone(p.pid));
    // Dumped a while: a relative timer must not count this.
    await new Promise((res) => setTimeout(res, 1000));
    const res = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(res.code, 0, `restore failed: ${res.stderr}`);
    assert(alive(p.pid));
    assertEquals(timers.map((t) => timerShape(p.pid, fds[t])), shapes, "clock, flags, interval");

    await until("gap seen", () => readText(log).includes("gap "));
    const gap = Object.fromEntries(
      [.../(\w+)=(-?\d+)/g[Symbol.matchAll](/gap (.*)/.exec(readText(log))![1])].map((
        m,
      ) => [m[1], Number(m[2])]),
    );
    const ms = (ns: number) => ns / 1e6;
    assert(gap.ms >= 1000, `the program saw the time it was dumped (${gap.ms} ms)`);
    // Relative: what it had left when it stopped, less the few ms it takes
    // to freeze and to start again (about 4 ms here; a loaded 2-core machine
    // adds its scheduling delays — still far from the second it was dumped).
    const relLost = ms(gap.rel_before - gap.rel_after);
    assert(relLost >= 0 && relLost < 50, `relative timer lost ${relLost} ms`);
    // Absolute: the same expiry, so what it has left went down by the gap.
    const absLost = ms(gap.abs_before - gap.abs_after);
    assert(Math.abs(absLost - gap.ms) < 5, `absolute timer lost ${absLost} ms in ${gap.ms} ms`);

    Deno.kill(p.pid, "SIGUSR1");
    await until("reads", () => readText(log).includes("read "));
    const read = Object.fromEntries(
      [.../(\w+)=([\d,]+)/g[Symbol.matchAll](/read (.*)/.exec(readText(log))![1])].map((
        m,
      ) => [m[1], m[2]]),
    );
    assertEquals(read.done, "1", "the one-shot's unread expiration");
    assertEquals(read.per, "1", "the periodic timer's unread expiration, no more");
    assert(Number(read.per_left_s) >= 27, `periodic timer still 30 s apart (${read.per_left_s})`);
    // SIGUSR2 is 12, SIGRTMIN+1 is 35 with glibc.
    assertEquals(read.sigs, "12,35");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

async function runCommand(cmd: string, args: string[]) {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output();
  assertEquals(out.code, 0, `${cmd} ${args.join(" ")}`);
}
