// restore --lazy-pages: the tree runs before its anonymous memory is in, and
// every page still arrives — through faults or the background copy — as the
// restored program's own checksum of its memory shows.
import { assert, assertEquals, assertMatch } from "../src/deps/std_assert.ts";
import { runCkpt, spawnCkpt } from "./helpers/ckpt.ts";
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

function reports(log: string) {
  return [...log.matchAll(/report pid=(\d+) tick=(\d+) sum=(\w+) want=(\w+)/g)]
    .map((m) => ({ pid: +m[1], tick: +m[2], sum: m[3], want: m[4] }));
}

/** Restored and let go: its own name (set by the restorer), no tracer. */
function running(pid: number): boolean {
  const st = readText(`/proc/${pid}/status`);
  return /^Name:\s+counter$/m.test(st) && /^TracerPid:\s+0$/m.test(st);
}

/** A counter of `mib` MiB, reported once, dumped (killed). */
async function dumpedCounter(dir: string, mib: number) {
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/counter`, dir, String(mib)]);
  await until("workload start", () => readText(log).includes("start"));
  Deno.kill(p.pid, "SIGUSR1");
  await until("first report", () => reports(readText(log)).length === 1);
  const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
  assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
  await p.status;
  await until(`pid ${p.pid} free`, () => gone(p.pid));
  return { pid: p.pid, log, before: reports(readText(log))[0] };
}

Deno.test("restore --lazy-pages -d: runs first, returns once every page is in", async () => {
  const dir = await tempDir("lazy");
  let pid = 0;
  try {
    const d = await dumpedCounter(dir, 64);
    pid = d.pid;
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d", "--lazy-pages", "--json"]);
    assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
    const out = JSON.parse(r.stdout);
    assertEquals(out.pid, pid);
    assert(
      out.firstInstructionMs > 0 && out.firstInstructionMs < out.ms,
      `running after ${out.firstInstructionMs} ms, all pages after ${out.ms} ms`,
    );
    assert(alive(pid));
    Deno.kill(pid, "SIGUSR1");
    await until("report after restore", () => reports(readText(d.log)).length === 2);
    const after = reports(readText(d.log))[1];
    assertEquals(after.sum, after.want, "memory checksum matches: every page arrived");
    assertEquals(after.sum, d.before.sum);
    assert(after.tick > d.before.tick, "the loop carries on");
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restore --lazy-pages without -d: pages served while ckpt stays the parent", async () => {
  const dir = await tempDir("lazy-parent");
  let pid = 0;
  try {
    const d = await dumpedCounter(dir, 64);
    pid = d.pid;
    const ckpt = spawnCkpt(["restore", "-D", `${dir}/images`, "--lazy-pages"]);
    // Let go by ckpt: no longer traced.
    await until(
      "restored",
      () => running(pid),
    );
    // The report reads all 64 MiB, most of it likely still being copied.
    Deno.kill(pid, "SIGUSR1");
    await until("report after restore", () => reports(readText(d.log)).length === 2);
    const after = reports(readText(d.log))[1];
    assertEquals(after.sum, after.want, "memory checksum matches: every page arrived");
    assertEquals(after.sum, d.before.sum);
    ckpt.kill("SIGTERM"); // forwarded to the restored task
    const st = await ckpt.output();
    assertEquals(st.code, 128 + 15, new TextDecoder().decode(st.stderr));
    await until("task gone", () => !alive(pid));
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restore --lazy-pages: a page that cannot be served kills the tree with one line", async () => {
  const dir = await tempDir("lazy-fail");
  let pid = 0;
  try {
    const d = await dumpedCounter(dir, 256);
    pid = d.pid;
    const ckpt = spawnCkpt(["restore", "-D", `${dir}/images`, "--lazy-pages"]);
    // As soon as the tree runs, while most of its 256 MiB is still to come,
    // the pages file loses everything but its header page.
    const end = Date.now() + 20_000;
    while (!(running(pid))) {
      if (Date.now() > end) throw new Error("timed out waiting for the restored tree");
    }
    Deno.truncateSync(`${dir}/images/pages-${pid}.img`, 4096);
    const st = await ckpt.output();
    const err = new TextDecoder().decode(st.stderr).trim();
    assertEquals(st.code, 1, err);
    assertEquals(err.split("\n").length, 1, err);
    assertMatch(
      err,
      new RegExp(
        `^ckpt: lazy restore of pid ${pid} failed, the tree was killed: pages-${pid}.img can no longer be read`,
      ),
    );
    await until("tree gone", () => !alive(pid));
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});
