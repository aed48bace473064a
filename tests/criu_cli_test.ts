// bin/criu (ckpt answering CRIU's command line) and what ckpt's own commands
// took from CRIU for it: --action-script, --display-stats, --pidfile, and
// CRIU's statistics in --json and in stats-dump / stats-restore.
import {
  assert,
  assertEquals,
  assertGreater,
  assertMatch,
  assertStringIncludes,
} from "../src/deps/std_assert.ts";
import { ROOT, runCkpt } from "./helpers/ckpt.ts";
import { wait } from "../src/native/mod.ts";
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

const CRIU = `${ROOT}/bin/criu`;

function existsDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

async function criu(args: string[]) {
  const out = await new Deno.Command(CRIU, {
    args,
    env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** An action script that logs each moment it is run for to LOG. */
async function loggingScript(dir: string, failAt = ""): Promise<string> {
  const path = `${dir}/action.sh`;
  await Deno.writeTextFile(
    path,
    `#!/bin/sh\necho "$CRTOOLS_SCRIPT_ACTION \${CRTOOLS_INIT_PID:-}" >> ${dir}/actions\n` +
      (failAt ? `[ "$CRTOOLS_SCRIPT_ACTION" = ${failAt} ] && exit 3\n` : "") + "exit 0\n",
  );
  await Deno.chmod(path, 0o755);
  return path;
}

Deno.test("criu --version and criu check answer as CRIU does, and say what they are", async () => {
  const v = await criu(["--version"]);
  assertEquals(v.code, 0);
  const [first, second] = v.stdout.split("\n");
  assertMatch(first, /^Version: \d+\.\d+(\.\d+)?$/);
  assertStringIncludes(second, "ckpt");
  assertStringIncludes(second, "not CRIU");
  const c = await criu(["check"]);
  assertEquals([c.code, c.stdout.trim()], [0, "Looks good."], c.stderr);
  const f = await criu(["check", "--feature", "mem_dirty_track", "--feature", "lazy_pages"]);
  assertEquals(f.code, 0, f.stdout);
  assertStringIncludes(f.stdout, "mem_dirty_track is supported");
  const no = await criu(["check", "--feature", "pidfd_store"]);
  assertEquals([no.code, no.stdout.trim()], [1, "pidfd_store is not supported"]);
  const bad = await criu(["check", "--feature", "nosuch"]);
  assertEquals(bad.code, 1);
  assertStringIncludes(bad.stderr, "unknown feature nosuch");
});

Deno.test("criu dump / restore with CRIU's options, action scripts in CRIU's order, stats and pidfile", async () => {
  const dir = await tempDir("criucli");
  const images = `${dir}/images`;
  const p = startSession([`${WORKLOADS}/counter`, dir, "4"]);
  let sibling = false;
  try {
    await until("counter start", () => readText(`${dir}/log`).includes("start"));
    const script = await loggingScript(dir);
    const d = await criu([
      "dump",
      "-t",
      String(p.pid),
      "-D",
      images,
      "-v4",
      "-o",
      "dump.log",
      "--display-stats",
      "--action-script",
      script,
      "--track-mem",
    ]);
    assertEquals(d.code, 0, d.stderr);
    assertStringIncludes(d.stdout, "Displaying dump stats:");
    assertMatch(d.stdout, /Memory pages written: [1-9]\d* \(0x/);
    assertStringIncludes(readText(`${images}/dump.log`), "Debug:", "-v4 -o dump.log in -D");
    await p.status;
    await until(`pid ${p.pid} free`, () => gone(p.pid));
    const r = await criu([
      "restore",
      "-D",
      images,
      "-d",
      "--pidfile",
      "restored.pid",
      "--action-script",
      script,
      "--evasive-devices",
      "--manage-cgroups=ignore",
      "--display-stats",
      "-S",
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertStringIncludes(r.stdout, "Displaying restore stats:");
    // -S (--restore-sibling): the root is the caller's child (this test's).
    const stat = readText(`/proc/${p.pid}/stat`);
    assertEquals(Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]), Deno.pid);
    sibling = true;
    assertEquals(readText(`${images}/restored.pid`).trim(), String(p.pid));
    assertEquals(readText(`${dir}/actions`).trim().split("\n").map((l) => l.trim()), [
      "pre-dump",
      "post-dump",
      "pre-restore",
      `post-restore ${p.pid}`,
      "pre-resume",
      "post-resume",
    ]);
    Deno.kill(p.pid, "SIGUSR1");
    await until("report after restore", () => readText(`${dir}/log`).includes("report"));
    assert(alive(p.pid));
    // CRIU's statistics, as crit shows them.
    const show = await runCkpt(["show", `${images}/stats-dump`]);
    assertEquals(show.code, 0, show.stderr);
    const shown = JSON.parse(show.stdout);
    assertEquals(shown.kind, "Stats");
    assertGreater(shown.payload.dump.pages_written, 0);
    assertGreater(shown.payload.dump.frozen_time, 0);
  } finally {
    if (sibling) {
      Deno.kill(p.pid, "SIGKILL");
      wait(p.pid, 0); // our child since the restore
    }
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("criu dump refuses by name what ckpt cannot honour, and a failing action script fails the dump", async () => {
  const dir = await tempDir("criuref");
  const p = startSession([`${WORKLOADS}/counter`, dir, "1"]);
  try {
    await until("counter start", () => readText(`${dir}/log`).includes("start"));
    for (
      const [opt, why] of [
        ["--tcp-established", "TCP"],
        ["--cgroup-yard=/tmp/yard", "yard"],
        ["--enable-external-masters", "mount"],
        ["--log-pid", "not supported"],
      ]
    ) {
      const r = await criu(["dump", "-t", String(p.pid), "-D", `${dir}/img`, opt]);
      assertEquals(r.code, 2, opt);
      assertStringIncludes(r.stderr, why);
    }
    const script = await loggingScript(dir, "post-dump");
    const f = await runCkpt([
      "dump",
      "-t",
      String(p.pid),
      "-D",
      `${dir}/img`,
      "--action-script",
      script,
      "--json",
    ]);
    assertEquals(f.code, 1);
    assertMatch(f.stderr, /post-dump action failed: .*action.sh exited with status 3/);
    assert(alive(p.pid), "the tree runs on");
    // Nothing left behind: not even the directory the failed dump made.
    assertEquals(readText(`${dir}/img/inventory.img`), "");
    assert(!existsDir(`${dir}/img`), "the failed dump removes the directory it made");
    // And ckpt dump --json carries the same statistics by CRIU's names.
    const ok = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/img2`, "--json"]);
    assertEquals(ok.code, 0, ok.stderr);
    const j = JSON.parse(ok.stdout);
    for (
      const k of ["freezing_time", "frozen_time", "memdump_time", "memwrite_time", "pages_written"]
    ) {
      assert(typeof j.stats[k] === "number", k);
    }
    assertEquals(j.stats.pages_written * 4096, j.pagesBytes);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
