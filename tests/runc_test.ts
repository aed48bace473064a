// The real runc (Debian's 1.1.5) driving ckpt as its CRIU (`runc --criu
// bin/criu`): how far it gets today. runc checks the version over swrk
// (VERSION) and sends DUMP / RESTORE with every option a container needs;
// ckpt refuses, by name, the ones that need namespaces, mounts and cgroups
// (not supported yet), does nothing, and the container runs on untouched.
// When those land, these tests turn into full runc checkpoint/restore tests.
import {
  assert,
  assertEquals,
  assertNotEquals,
  assertStringIncludes,
} from "../src/deps/std_assert.ts";
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

Deno.test("runc checkpoint --criu bin/criu: VERSION passes, the DUMP is refused by option, the container runs on", async () => {
  const dir = await tempDir("runc");
  const id = `ckpt-rpc-${Deno.pid}`;
  try {
    const b = await bundle(dir);
    const run = await runc(["run", "-d", id], b, true);
    assertEquals(run.code, 0, "runc run -d failed");
    const state = JSON.parse((await runc(["state", id])).stdout);
    const pid = state.pid as number;
    const r = await runc(["--criu", CRIU, "checkpoint", "--image-path", `${dir}/img`, id]);
    assertNotEquals(r.code, 0);
    // runc got past its version check (an answer below 3.0 is refused before
    // any DUMP) and sent the DUMP, which ckpt refused (EOPNOTSUPP) by name.
    assertStringIncludes(r.stderr, "criu failed: type DUMP errno 95");
    const log = readText(`${dir}/img/dump.log`);
    assertStringIncludes(log, "DUMP request from pid");
    for (const f of ["ext_mnt", "manage_cgroups", "freeze_cgroup"]) {
      assertStringIncludes(log, f);
    }
    // empty_ns=CLONE_NEWNET (runc leaves the network to itself) is honoured.
    assert(!log.includes("empty_ns="), log);
    // Nothing was done: the container is still running, not frozen.
    assertEquals((JSON.parse((await runc(["state", id])).stdout)).status, "running");
    assert(!gone(pid));
    assertEquals(/TracerPid:\s+(\d+)/.exec(readText(`/proc/${pid}/status`))?.[1], "0");
  } finally {
    await runc(["delete", "-f", id]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runc restore --criu bin/criu: the RESTORE is refused by option (root, mounts, cgroups)", async () => {
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
    assertNotEquals(r.code, 0);
    assertStringIncludes(r.stderr, "criu failed: type RESTORE errno 95");
    const log = readText(`${dir}/img/restore.log`);
    for (const f of ["root=", "ext_mnt", "manage_cgroups", "cg_root"]) {
      assertStringIncludes(log, f);
    }
    assert(gone(pid), "nothing was restored");
  } finally {
    await runc(["delete", "-f", id]);
    await Deno.remove(dir, { recursive: true });
  }
});
