// Pipes restored exactly: each open file description with its own status
// flags and the pipe with its capacity; a pipe whose other end was outside
// the tree comes back with that end closed (queued bytes kept), or joined to
// the caller's pipe with --inherit-fd.
import { assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { CKPT, runCkpt } from "./helpers/ckpt.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  startSessionPiped,
  tempDir,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";

const enc = new TextEncoder();

async function dumped(dir: string) {
  const log = `${dir}/log`;
  const p = startSessionPiped([`${WORKLOADS}/pipeflags`, dir]);
  await until("workload start", () => readText(log).includes("start"));
  const w = p.stdin.getWriter();
  await w.write(enc.encode("queued-before-dump\n"));
  Deno.kill(p.pid, "SIGUSR1");
  await until("flags before", () => readText(log).includes("flags"));
  const before = readText(log).match(/flags .*/)![0];
  const stdinIno = Deno.readLinkSync(`/proc/${p.pid}/fd/0`);
  const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
  assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
  assertStringIncludes(r.stderr, "outside the tree", "the outside end is said at dump");
  await p.status;
  await until(`pid ${p.pid} free`, () => gone(p.pid));
  return { pid: p.pid, before, stdinIno, writer: w };
}

Deno.test("pipe ends keep their own O_NONBLOCK and the pipe its size; an outside writer's end comes back closed with the queued bytes", async () => {
  const dir = await tempDir("pipeflags");
  const log = `${dir}/log`;
  let pid = 0;
  try {
    const d = await dumped(dir);
    pid = d.pid;
    assertEquals(d.before, "flags a0=1 a1=0 b0=0 b2=1 csize=1048576");
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
    assertMatch(r.stderr, /read end of pipe:\[\d+\], whose other end was outside/);
    assertStringIncludes(r.stderr, "--inherit-fd fd[N]:pipe:[");
    Deno.kill(pid, "SIGUSR1");
    await until("flags after", () => readText(log).match(/flags /g)?.length === 2);
    assertEquals(readText(log).match(/flags .*/g)![1], d.before, "every description as it was");
    Deno.kill(pid, "SIGUSR2");
    await until("stdin read", () => readText(log).includes("stdin="));
    assertStringIncludes(readText(log), "stdin=queued-before-dump| eof");
    assertEquals(alive(pid), true);
    await d.writer.close().catch(() => {});
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--inherit-fd fd[0]:pipe:[INO] joins the outside end to the caller's pipe", async () => {
  const dir = await tempDir("pipeinherit");
  const log = `${dir}/log`;
  let pid = 0;
  try {
    const d = await dumped(dir);
    pid = d.pid;
    const restore = new Deno.Command(CKPT, {
      args: ["restore", "-D", `${dir}/images`, "-d", "--inherit-fd", `fd[0]:${d.stdinIno}`],
      env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = restore.stdin.getWriter();
    await w.write(enc.encode("sent-after-restore\n"));
    await w.close();
    const out = await restore.output();
    assertEquals(out.code, 0, `restore failed: ${new TextDecoder().decode(out.stderr)}`);
    Deno.kill(pid, "SIGUSR2");
    await until("stdin read", () => readText(log).includes("stdin="));
    assertStringIncludes(readText(log), "stdin=sent-after-restore| eof");
    await d.writer.close().catch(() => {});
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});
