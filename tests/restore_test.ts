// Dump and restore of real single-process programs, checked by what the
// restored process does afterwards.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
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

async function dumpAndReap(pid: number, status: Promise<Deno.CommandStatus>, dir: string) {
  const r = await runCkpt(["dump", "-t", String(pid), "-D", dir]);
  assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
  const st = await status;
  assertEquals(st.signal, "SIGKILL", "dump kills the task by default");
  await until(`pid ${pid} free`, () => gone(pid));
}

async function restoreDetached(dir: string, pid: number) {
  const r = await runCkpt(["restore", "-D", dir, "-d"]);
  assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
  assertStringIncludes(r.stdout, `restored pid ${pid}`);
  assert(alive(pid), `pid ${pid} runs after restore`);
}

function reports(log: string) {
  return [...log.matchAll(/report pid=(\d+) tick=(\d+) sum=(\w+) want=(\w+) off=(\d+) ymm=(\d)/g)]
    .map(
      (m) => ({ pid: +m[1], tick: +m[2], sum: m[3], want: m[4], off: +m[5], ymm: +m[6] }),
    );
}

Deno.test("C program: 32 MiB of memory, O_APPEND log, file offset, SIGUSR1 handler, AVX registers", async () => {
  const dir = await tempDir("counter");
  const images = `${dir}/images`;
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/counter`, dir, "32"]);
  try {
    await until("workload start", () => readText(log).includes("start"));
    Deno.kill(p.pid, "SIGUSR1");
    await until("first report", () => reports(readText(log)).length === 1);
    const before = reports(readText(log))[0];

    await dumpAndReap(p.pid, p.status, images);
    // Images hold memory: owner-only.
    assertEquals((await Deno.stat(images)).mode! & 0o777, 0o700);
    for await (const e of Deno.readDir(images)) {
      assertEquals((await Deno.stat(`${images}/${e.name}`)).mode! & 0o777, 0o600, e.name);
    }

    await restoreDetached(images, p.pid);
    Deno.kill(p.pid, "SIGUSR1");
    await until("report after restore", () => reports(readText(log)).length === 2);
    const after = reports(readText(log))[1];
    assertEquals(after.pid, p.pid);
    assertEquals(after.sum, after.want, "memory checksum matches the one computed at start");
    assertEquals(after.sum, before.sum);
    assertEquals(after.off, 7, "file offset survived");
    assertEquals(after.ymm, 1, "ymm register kept its value across the checkpoint");
    assert(after.tick > before.tick, "the loop carries on");
    // Still running, still ticking.
    await new Promise((r) => setTimeout(r, 100));
    Deno.kill(p.pid, "SIGUSR1");
    await until("third report", () => reports(readText(log)).length === 3);
    assert(reports(readText(log))[2].tick > after.tick);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("blocking read on a FIFO resumes after restore; pipe bytes in flight survive", async () => {
  const dir = await tempDir("reader");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/reader`, dir]);
  try {
    await until("reader ready", () => readText(log).includes("ready"));
    await new Promise((r) => setTimeout(r, 100)); // let it block in read(2)
    await dumpAndReap(p.pid, p.status, `${dir}/images`);
    await restoreDetached(`${dir}/images`, p.pid);
    const fifo = await Deno.open(`${dir}/fifo`, { write: true });
    await fifo.write(new TextEncoder().encode("hello\n"));
    fifo.close();
    await until("line read", () => readText(log).includes("read="));
    assertStringIncludes(readText(log), "read=hello inflight=bytes-in-flight");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a nanosleep interrupted by the dump sleeps on after restore, never seeing EINTR", async () => {
  const dir = await tempDir("sleeper");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/sleeper`, log, "1200"]);
  try {
    await until("sleeper start", () => readText(log).includes("start"));
    await new Promise((r) => setTimeout(r, 300));
    await dumpAndReap(p.pid, p.status, `${dir}/images`);
    await restoreDetached(`${dir}/images`, p.pid);
    await until("two sleeps done", () => readText(log).includes("slept i=1 "), 8000);
    const text = readText(log);
    assertEquals(text.match(/start/g)?.length, 1, "not started again");
    assertMatch(text, /slept i=0 ms=\d+ interrupted=0/);
    assertMatch(text, /slept i=1 ms=\d+ interrupted=0/);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("python3 counting loop continues its count after restore", async () => {
  const dir = await tempDir("python");
  const out = `${dir}/out`;
  // The SIGUSR1 handler is installed with SA_ONSTACK by Python: after
  // restore it must not find ckpt's own alternate signal stack.
  const prog = "import signal, time\ni = 0\ndef h(*_):\n    print(-1, flush=True)\n" +
    "signal.signal(signal.SIGUSR1, h)\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.02)\n";
  const p = startSession(["sh", "-c", `exec python3 -u -c '${prog}' > ${out}`]);
  const numbers = () =>
    readText(out).trim().split("\n").filter(Boolean).map(Number).filter((n) => n >= 0);
  try {
    await until("python counting", () => numbers().length >= 10);
    await dumpAndReap(p.pid, p.status, `${dir}/images`);
    const last = numbers().at(-1)!;
    await restoreDetached(`${dir}/images`, p.pid);
    await until("more numbers", () => numbers().at(-1)! >= last + 10);
    Deno.kill(p.pid, "SIGUSR1");
    await until("python handler ran", () => readText(out).includes("-1\n"));
    const n = numbers().at(-1)!;
    await until("still counting after the signal", () => numbers().at(-1)! > n + 3);
    const all = numbers();
    all.forEach((n, i) => assertEquals(n, i, "every number once, in order"));
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--leave-running, restore into a taken pid, and a missing pid", async () => {
  const dir = await tempDir("leave");
  const log = `${dir}/log`;
  const images = `${dir}/images`;
  const p = startSession([`${WORKLOADS}/sleeper`, log, "30"]);
  try {
    await until("sleeper start", () => readText(log).includes("slept"));
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", images, "--leave-running"]);
    assertEquals(r.code, 0, r.stderr);
    const n = readText(log).length;
    await until("original keeps running", () => readText(log).length > n);

    const taken = await runCkpt(["restore", "-D", images, "-d"]);
    assertEquals(taken.code, 1);
    assertMatch(taken.stderr, /^ckpt: pid \d+ is taken by sleeper; .*\n$/);
    assert(alive(p.pid), "the original is untouched");

    Deno.kill(p.pid, "SIGKILL");
    await p.status;
    await until("pid free", () => gone(p.pid));
    await restoreDetached(images, p.pid);
    const m = readText(log).length;
    await until("restored copy runs", () => readText(log).length > m);

    let free = 4194303;
    while (!gone(free)) free--;
    const missing = await runCkpt(["dump", "-t", String(free), "-D", `${dir}/none`]);
    assertEquals(missing.code, 1);
    assertEquals(missing.stderr, `ckpt: no process with pid ${free}\n`);
    // Above any pid the kernel gives: a usage error.
    const huge = await runCkpt(["dump", "-t", "999999999", "-D", `${dir}/none`]);
    assertEquals(huge.code, 2, huge.stderr);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a refused dump leaves the process running and no images restore would accept", async () => {
  const dir = await tempDir("refused");
  const out = `${dir}/out`;
  const prog =
    // A packet socket: a kind of file ckpt refuses.
    "import socket, time\na = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)\ni = 0\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.02)\n";
  const p = startSession(["sh", "-c", `exec python3 -u -c '${prog}' > ${out}`]);
  try {
    await until("python running", () => readText(out).length > 0);
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /^ckpt: fd \d+ of pid \d+ \(socket:\[\d+\]\)/);
    const n = readText(out).length;
    await until("still running", () => readText(out).length > n);
    // The directory the refused dump made is gone again.
    const again = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(again.code, 1);
    assertStringIncludes(again.stderr, "no such images directory");
    // Into a directory that was there: left there, with nothing restore accepts.
    Deno.mkdirSync(`${dir}/kept`);
    assertEquals((await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/kept`])).code, 1);
    const kept = await runCkpt(["restore", "-D", `${dir}/kept`, "-d"]);
    assertEquals(kept.code, 1);
    assertStringIncludes(kept.stderr, "inventory.img");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("without -d ckpt stays the parent and exits with the restored task's status", async () => {
  const dir = await tempDir("parent");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/sleeper`, log, "50"]);
  try {
    await until("sleeper runs", () => readText(log).includes("slept"));
    await dumpAndReap(p.pid, p.status, `${dir}/images`);
    const ckpt = spawnCkpt(["restore", "-D", `${dir}/images`]);
    await until("restored", () => alive(p.pid));
    const n = readText(log).length;
    await until("restored task runs", () => readText(log).length > n);
    ckpt.kill("SIGTERM"); // forwarded to the restored task
    const st = await ckpt.output();
    assertEquals(st.code, 128 + 15, new TextDecoder().decode(st.stderr));
    await until("task gone", () => !alive(p.pid));
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--leave-running freezes only while state is taken: pages come from a frozen copy that leaves no trace", async () => {
  const dir = await tempDir("snapshot");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/counter`, dir, "64"]);
  try {
    await until("started", () => readText(log).includes("start"));
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`, "-R", "--json"]);
    assertEquals(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    assert(res.frozenMs < res.totalMs, `frozen ${res.frozenMs} ms of ${res.totalMs} ms`);
    const kids = readText(`/proc/${p.pid}/task/${p.pid}/children`).trim();
    assertEquals(kids, "", "the frozen copy was reaped by the task itself");
    Deno.kill(p.pid, "SIGUSR1");
    await until("original answers", () => reports(readText(log)).length === 1);
    assertEquals(reports(readText(log))[0].sum, reports(readText(log))[0].want);
    Deno.kill(p.pid, "SIGKILL");
    await p.status;
    await until("pid free", () => gone(p.pid));
    await restoreDetached(`${dir}/images`, p.pid);
    Deno.kill(p.pid, "SIGUSR1");
    await until("restored answers", () => reports(readText(log)).length === 2);
    const after = reports(readText(log))[1];
    assertEquals(after.sum, after.want, "the copy's memory was the task's");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a large task's damaged page run is caught while filling, before anything runs", async () => {
  const dir = await tempDir("fill-crc");
  const p = startSession([`${WORKLOADS}/counter`, dir, "48"]);
  try {
    await until("started", () => readText(`${dir}/log`).includes("start"));
    await dumpAndReap(p.pid, p.status, `${dir}/images`);
    const pages = `${dir}/images/pages-${p.pid}.img`;
    const f = await Deno.open(pages, { read: true, write: true });
    const size = (await f.stat()).size;
    const at = Math.floor(size / 2 / 4096) * 4096 + 123;
    const b = new Uint8Array(1);
    await f.seek(at, Deno.SeekMode.Start);
    await f.read(b);
    b[0] ^= 0x10;
    await f.seek(at, Deno.SeekMode.Start);
    await f.write(b);
    f.close();
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 1);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    assertMatch(
      r.stderr,
      new RegExp(`^ckpt: .*pages-${p.pid}\\.img: checksum mismatch in the run at offset 0x`),
    );
    assert(!alive(p.pid), "nothing left running");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
