// The real runc (Debian's 1.1.5) driving ckpt as its CRIU (`runc --criu
// bin/criu`): runc checks the version over swrk (VERSION) and sends DUMP /
// RESTORE with every option a container needs (namespaces, mounts, cgroups),
// and the container comes back.
import { assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { ROOT, runCkpt } from "./helpers/ckpt.ts";
import { ensureProgram } from "./helpers/packages.ts";
import { gone, readText, startSession, tempDir, until, WORKLOADS } from "./helpers/proc.ts";

const CRIU = `${ROOT}/bin/criu`;
const dec = new TextDecoder();

/** Runs runc; `detached`: its output goes nowhere (a container started with
 * `run -d` keeps runc's stdio, so a pipe would never reach its end). */
async function runc(args: string[], cwd?: string, detached = false) {
  const runcPath = await ensureProgram("runc", "runc");
  const out = await new Deno.Command(runcPath, {
    args,
    cwd,
    env: { DENO_BIN: Deno.execPath() },
    stdin: "null",
    stdout: detached ? "null" : "piped",
    stderr: detached ? "null" : "piped",
  }).output();
  if (detached) return { code: out.code, stdout: "", stderr: "" };
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A bundle whose container runs the static ticker. */
async function bundle(dir: string): Promise<string> {
  const b = `${dir}/bundle`;
  await Deno.mkdir(`${b}/rootfs/bin`, { recursive: true });
  await Deno.copyFile(`${WORKLOADS}/ticker-static`, `${b}/rootfs/bin/ticker`);
  await Deno.chmod(`${b}/rootfs/bin/ticker`, 0o755);
  const spec = await runc(["spec"], b);
  assertEquals(spec.code, 0, spec.stderr);
  const config = JSON.parse(await Deno.readTextFile(`${b}/config.json`));
  config.process.args = ["/bin/ticker", "1"];
  config.process.terminal = false;
  await Deno.writeTextFile(`${b}/config.json`, JSON.stringify(config));
  return b;
}

/** runc with its stdout (and so the detached container's) appended to
 * `out`, through a shell: Deno can only pipe or discard a child's output. */
async function runcInto(out: string, args: string[], cwd: string) {
  const runcPath = await ensureProgram("runc", "runc");
  const q = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;
  const r = await new Deno.Command("sh", {
    args: ["-c", `exec ${[runcPath, ...args].map(q).join(" ")} >>${q(out)} 2>>${q(out)}.err`],
    cwd,
    env: { DENO_BIN: Deno.execPath() },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
  return { code: r.code, stderr: readText(`${out}.err`) };
}

/** The last "tick N pid P sum S" line the container wrote. */
function lastTick(out: string): { n: number; sum: string } | undefined {
  const lines = readText(out).trim().split("\n").filter((l) => l.startsWith("tick "));
  const m = /^tick (\d+) pid \d+ sum (\S+)/.exec(lines.at(-1) ?? "");
  return m ? { n: Number(m[1]), sum: m[2] } : undefined;
}

Deno.test("runc checkpoint and restore --criu bin/criu: the container comes back and ticks on from where it was", async () => {
  const dir = await tempDir("runc");
  const id = `ckpt-rpc-${Deno.pid}`;
  const out = `${dir}/out`;
  try {
    const b = await bundle(dir);
    const run = await runcInto(out, ["run", "-d", id], b);
    assertEquals(run.code, 0, `runc run -d failed: ${run.stderr}`);
    const state = JSON.parse((await runc(["state", id])).stdout);
    const pid = state.pid as number;
    await until("the container ticking", () => (lastTick(out)?.n ?? 0) > 5);
    const r = await runc(["--criu", CRIU, "checkpoint", "--image-path", `${dir}/img`, id]);
    assertEquals(r.code, 0, r.stderr);
    const log = readText(`${dir}/img/dump.log`);
    assertStringIncludes(log, "DUMP request from pid");
    await until("the container gone", () => gone(pid)).catch(() => {
      throw new Error(`the checkpoint did not end the container: ${log}`);
    });
    const atDump = lastTick(out)!;
    const rr = await runcInto(
      out,
      ["--criu", CRIU, "restore", "-d", "--image-path", `${dir}/img`, id],
      b,
    );
    assertEquals(rr.code, 0, rr.stderr);
    assertEquals((JSON.parse((await runc(["state", id])).stdout)).status, "running");
    await until("the restored container ticking", () => lastTick(out)!.n > atDump.n + 5);
    const now = lastTick(out)!;
    // Its memory came back as it was (the checksum of its pattern).
    assertEquals(now.sum, atDump.sum);
    const ticks = readText(out).split("\n").filter((l) => l.startsWith("tick "))
      .map((l) => Number(l.split(" ")[1]));
    // The count goes on from the checkpoint: no number again, none skipped.
    for (let i = 1; i < ticks.length; i++) assertEquals(ticks[i], ticks[i - 1] + 1);
  } finally {
    await runc(["delete", "-f", id]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runc restore --criu bin/criu of images made outside any container: root, ext_mnt and cgroups are taken, the process runs again with its pid", async () => {
  const dir = await tempDir("runcrst");
  const id = `ckpt-rpc-r-${Deno.pid}`;
  let pid = 0;
  try {
    const b = await bundle(dir);
    // Images of a process outside any container, with the descriptors.json
    // runc keeps next to them.
    const p = startSession([`${WORKLOADS}/ticker`, "1"]);
    pid = p.pid;
    await until("ticker started", () => readText(`/proc/${pid}/comm`).startsWith("ticker"));
    const d = await runCkpt(["dump", "-t", String(pid), "-D", `${dir}/img`]);
    assertEquals(d.code, 0, d.stderr);
    await p.status;
    await Deno.writeTextFile(
      `${dir}/img/descriptors.json`,
      '["/dev/null","/dev/null","/dev/null"]',
      {
        mode: 0o600,
      },
    );
    const r = await runc(
      ["--criu", CRIU, "restore", "-d", "--image-path", `${dir}/img`, id],
      b,
    );
    assertEquals(r.code, 0, r.stderr);
    const log = readText(`${dir}/img/restore.log`);
    // The tree had no mount namespace: runc's root is noted, not used.
    assertStringIncludes(log, "--root: the tree shares ckpt's mounts");
    const state = JSON.parse((await runc(["state", id])).stdout);
    assertEquals(state.status, "running");
    assertEquals(state.pid, pid);
    assertMatch(readText(`/proc/${pid}/comm`), /^ticker/);
    // It ticks (a 20 ms sleep a tick): its voluntary switches go up.
    const switches = () =>
      Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(readText(`/proc/${pid}/status`))![1]);
    const s0 = switches();
    await until("the restored ticker ticking", () => switches() > s0 + 5);
  } finally {
    await runc(["delete", "-f", id]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runc checkpoint --pre-dump and --leave-running leave the container running; a checkpoint with --parent-path on the pre-dump ends it, and it comes back from those images ticking on", async () => {
  const dir = await tempDir("runc-pre");
  const id = `ckpt-pre-${Deno.pid}`;
  const out = `${dir}/out`;
  try {
    const b = await bundle(dir);
    const run = await runcInto(out, ["run", "-d", id], b);
    assertEquals(run.code, 0, `runc run -d failed: ${run.stderr}`);
    const pid = (JSON.parse((await runc(["state", id])).stdout)).pid as number;
    await until("the container ticking", () => (lastTick(out)?.n ?? 0) > 3);
    const pre = await runc([
      "--criu",
      CRIU,
      "checkpoint",
      "--pre-dump",
      "--image-path",
      `${dir}/pre`,
      id,
    ]);
    assertEquals(pre.code, 0, pre.stderr);
    let n = lastTick(out)!.n;
    await until("ticking after the pre-dump", () => lastTick(out)!.n > n + 2);
    // A checkpoint that leaves it running.
    const lr = await runc([
      "--criu",
      CRIU,
      "checkpoint",
      "--leave-running",
      "--image-path",
      `${dir}/img-lr`,
      id,
    ]);
    assertEquals(lr.code, 0, lr.stderr);
    n = lastTick(out)!.n;
    await until("ticking after --leave-running", () => lastTick(out)!.n > n + 2);
    assertEquals((JSON.parse((await runc(["state", id])).stdout)).status, "running");
    // The final checkpoint on top of the pre-dump's pages ends it.
    const r = await runc([
      "--criu",
      CRIU,
      "checkpoint",
      "--parent-path",
      "../pre",
      "--image-path",
      `${dir}/img`,
      id,
    ]);
    assertEquals(r.code, 0, r.stderr);
    await until("the container gone", () => gone(pid));
    const rr = await runcInto(
      out,
      ["--criu", CRIU, "restore", "-d", "--image-path", `${dir}/img`, id],
      b,
    );
    assertEquals(rr.code, 0, rr.stderr);
    const lines = () => readText(out).split("\n").filter((l) => l.startsWith("tick ")).length;
    const before = lines();
    await until("the restored container ticking", () => lines() > before + 3);
    assertEquals((JSON.parse((await runc(["state", id])).stdout)).pid, pid, "the same pid");
  } finally {
    await runc(["delete", "-f", id]);
    await Deno.remove(dir, { recursive: true });
  }
});
