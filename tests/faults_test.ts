// Fault injection with real processes: a dump that fails at any stage leaves
// the tree running and no image restore would accept; a restore that fails
// at any stage leaves no task alive and the images untouched. Also the safety
// rules: untrusted images are refused, two ckpt runs on one tree or
// directory are refused.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { CKPT, runCkpt } from "./helpers/ckpt.ts";
import { Locks } from "../src/util/lock.ts";
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

function sh(cmd: string, ...args: string[]): void {
  const o = new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).outputSync();
  if (o.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
  }
}

/** Content and mode of every file in dir, to prove restore changed nothing. */
async function hashDir(dir: string): Promise<string> {
  const parts: string[] = [];
  for (const e of [...Deno.readDirSync(dir)].sort((a, b) => a.name.localeCompare(b.name))) {
    const st = Deno.lstatSync(`${dir}/${e.name}`);
    const h = st.isFile
      ? new Uint8Array(
        await crypto.subtle.digest("SHA-256", Deno.readFileSync(`${dir}/${e.name}`)),
      )
      : new Uint8Array();
    parts.push(`${e.name}:${st.mode}:${st.uid}:${[...h].map((b) => b.toString(16)).join("")}`);
  }
  return parts.join("\n");
}

function tracer(pid: number): number {
  return Number(/TracerPid:\s+(\d+)/.exec(readText(`/proc/${pid}/status`))?.[1] ?? 0);
}

function reports(log: string): { sum: string; want: string }[] {
  return [...log.matchAll(/report pid=\d+ tick=\d+ sum=(\w+) want=(\w+)/g)].map((m) => ({
    sum: m[1],
    want: m[2],
  }));
}

/** The counter still runs, untraced, with its memory intact: it answers
 * SIGUSR1 with a report whose checksum matches the one it started with. */
async function healthy(pid: number, log: string): Promise<void> {
  await until(`pid ${pid} untraced`, () => tracer(pid) === 0);
  assert(alive(pid), `pid ${pid} still alive`);
  const n = reports(readText(log)).length;
  Deno.kill(pid, "SIGUSR1");
  await until(`pid ${pid} answers`, () => reports(readText(log)).length > n);
  const r = reports(readText(log)).at(-1)!;
  assertEquals(r.sum, r.want, "memory unchanged");
}

async function refusedByRestore(images: string): Promise<void> {
  const r = await runCkpt(["restore", "-D", images, "-d"]);
  assertEquals(r.code, 1, `restore must refuse: ${r.stdout}`);
  assertMatch(r.stderr, /^ckpt: [^\n]+\n$/);
}

async function startCounter(root: string, mib: number) {
  const p = startSession([`${WORKLOADS}/counter`, root, String(mib)]);
  await until("counter start", () => readText(`${root}/log`).includes("start"), 30_000);
  return p;
}

Deno.test("dump into an unwritable directory, a full disk, or onto a file: tree runs on, nothing accepted", async () => {
  const root = await tempDir("faults-dump");
  const p = await startCounter(root, 32);
  const log = `${root}/log`;
  const ro = `${root}/ro`, full = `${root}/full`;
  try {
    // Read-only bind mount: root's chmod bypass does not help here.
    Deno.mkdirSync(ro);
    sh("mount", "--bind", ro, ro);
    sh("mount", "-o", "remount,bind,ro", ro);
    let r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${ro}/images`]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /^ckpt: .*images.*(Read-only|read-only).*\n$/);
    await healthy(p.pid, log);

    r = await runCkpt(["dump", "-t", String(p.pid), "-D", ro]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /^ckpt: [^\n]+\n$/);
    await healthy(p.pid, log);

    // ENOSPC: 32 MiB of memory into a 1 MiB tmpfs.
    Deno.mkdirSync(full);
    sh("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", full);
    r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${full}/images`]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /^ckpt: [^\n]+\n$/);
    assertStringIncludes(r.stderr, "pages");
    await healthy(p.pid, log);
    assertEquals(
      [...Deno.readDirSync(full)].map((e) => e.name),
      [],
      "a failed dump removes what it wrote, and the directory it made",
    );
    await refusedByRestore(`${full}/images`);

    // A regular file where the directory should be.
    Deno.writeTextFileSync(`${root}/file`, "x");
    r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${root}/file`]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /^ckpt: [^\n]*file[^\n]*\n$/);
    await healthy(p.pid, log);
  } finally {
    for (const m of [ro, full]) {
      try {
        sh("umount", m);
      } catch { /* not mounted */ }
    }
    await killAndForget(p.pid);
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("SIGKILL of ckpt at several points of a dump: the process runs on intact, restore refuses", async () => {
  const root = await tempDir("faults-kill");
  // Big enough that the dump is still copying at the last point.
  const p = await startCounter(root, 768);
  const log = `${root}/log`;
  try {
    // Named points (ckpt pauses there with CKPT_FAULT_PAUSE): the tree just
    // frozen, and its state collected; then points while the pages are
    // copied, counted from when the log says they are planned. A kill inside
    // one of the few injected system calls is the one known exception (see
    // docs/reliability.md): those windows are not aimed at here.
    const points = [
      ["frozen", 0],
      ["collected", 0],
      ["planned", 0],
      ["planned", 20],
      ["planned", 60],
      ["planned", 120],
    ] as const;
    for (const [at, delay] of points) {
      const images = `${root}/images-${at}-${delay}`;
      const ckptLog = `${root}/ckpt-${at}-${delay}.log`;
      const child = new Deno.Command(CKPT, {
        args: ["dump", "-t", String(p.pid), "-D", images, "-v2", "--log-file", ckptLog],
        env: { DENO_BIN: Deno.execPath(), CKPT_FAULT_PAUSE: at },
        stdout: "null",
        stderr: "null",
      }).spawn();
      // From the moment ckpt holds the process (it is the tracer).
      await until("ckpt seizes the process", () => tracer(p.pid) !== 0, 30_000);
      const ckptPid = tracer(p.pid);
      const mark = at === "planned" ? "pages planned" : `fault point ${at}`;
      await until(mark, () => readText(ckptLog).includes(mark), 30_000, 0);
      await new Promise((r) => setTimeout(r, delay));
      Deno.kill(ckptPid, "SIGKILL");
      await child.status;
      await healthy(p.pid, log);
      await refusedByRestore(images);
    }
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a process that exits mid-dump, and one that keeps forking: clean errors, no image accepted", async () => {
  const root = await tempDir("faults-exit");
  const p = await startCounter(root, 256);
  try {
    const images = `${root}/images`;
    const child = new Deno.Command(CKPT, {
      args: ["dump", "-t", String(p.pid), "-D", images],
      env: { DENO_BIN: Deno.execPath() },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    await until("ckpt seizes the process", () => tracer(p.pid) !== 0, 30_000);
    Deno.kill(p.pid, "SIGKILL");
    const out = await child.output();
    assertEquals(out.code, 1);
    assertMatch(new TextDecoder().decode(out.stderr), /^ckpt: pid \d+ exited during the dump/);
    await refusedByRestore(images);
  } finally {
    await killAndForget(p.pid);
  }

  // A shell forking a child every few milliseconds: each dump either
  // succeeds or is refused cleanly, and the shell runs on.
  const out = `${root}/forks`;
  const f = startSession([
    "sh",
    "-c",
    `i=0; while :; do i=$((i+1)); echo $i > ${out}; /bin/true; done`,
  ]);
  try {
    await until("forker runs", () => readText(out).length > 0);
    for (let i = 0; i < 3; i++) {
      const r = await runCkpt(["dump", "-t", String(f.pid), "-D", `${root}/fork-${i}`, "-R"]);
      assert(r.code === 0 || /^ckpt: [^\n]+\n$/.test(r.stderr), r.stderr);
      if (r.code !== 0) await refusedByRestore(`${root}/fork-${i}`);
      const n = readText(out);
      await until("forker runs on", () => readText(out) !== n);
      assertEquals(tracer(f.pid), 0);
    }
  } finally {
    await killAndForget(f.pid);
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("restore failing at each stage leaves no task and the images untouched", async () => {
  const root = await tempDir("faults-restore");
  // The workload runs from a private copy of its binary, so the test can
  // damage the mapped file without touching the build.
  Deno.copyFileSync(`${WORKLOADS}/counter`, `${root}/counter`);
  Deno.chmodSync(`${root}/counter`, 0o755);
  const p = startSession([`${root}/counter`, root, "8"]);
  const images = `${root}/images`;
  const pid = p.pid;
  try {
    await until("counter start", () => readText(`${root}/log`).includes("start"));
    let r = await runCkpt(["dump", "-t", String(pid), "-D", images, "-R"]);
    assertEquals(r.code, 0, r.stderr);
    const before = await hashDir(images);
    const expectFail = async (args: string[], pattern: RegExp) => {
      const res = await runCkpt(["restore", "-D", images, "-d", ...args]);
      assertEquals(res.code, 1, res.stdout);
      assertMatch(res.stderr, pattern);
      assertMatch(res.stderr, /^ckpt: [^\n]+\n$/);
      assertEquals(await hashDir(images), before, "images untouched");
    };

    // Taken pid: the original still runs.
    await expectFail([], /pid \d+ is taken/);
    assert(alive(pid));
    Deno.kill(pid, "SIGKILL");
    await p.status;
    await until("pid free", () => gone(pid));

    // A file the process had open is gone.
    Deno.renameSync(`${root}/data`, `${root}/data.away`);
    await expectFail([], /data is missing/);
    assert(gone(pid), "no task left");
    Deno.renameSync(`${root}/data.away`, `${root}/data`);

    // An image file is gone: named, nothing started.
    const fdinfo = [...Deno.readDirSync(images)].find((e) => e.name.startsWith("fdinfo-"))!.name;
    Deno.renameSync(`${images}/${fdinfo}`, `${root}/${fdinfo}`);
    const res = await runCkpt(["restore", "-D", images, "-d"]);
    assertEquals(res.code, 1);
    assertStringIncludes(res.stderr, fdinfo);
    assert(gone(pid));
    Deno.renameSync(`${root}/${fdinfo}`, `${images}/${fdinfo}`);
    assertEquals(await hashDir(images), before);

    // The restorer itself fails: the executable was truncated after the
    // dump, so its private data pages lie past the end of the file and
    // cannot be filled. The child is killed; nothing keeps the pid.
    const exe = Deno.readFileSync(`${root}/counter`);
    Deno.truncateSync(`${root}/counter`, 0);
    await expectFail(["--file-validation", "none"], /failed at|restorer|pid \d+/);
    assert(gone(pid), "the half-built task was killed");
    Deno.writeFileSync(`${root}/counter`, exe);

    // Put back, the same images restore.
    r = await runCkpt(["restore", "-D", images, "-d", "--file-validation", "none"]);
    assertEquals(r.code, 0, r.stderr);
    assert(alive(pid));
  } finally {
    await killAndForget(pid);
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("restore refuses images it cannot trust unless --trust-images; one ckpt per tree and directory", async () => {
  const root = await tempDir("faults-trust");
  const p = await startCounter(root, 64);
  const images = `${root}/images`;
  try {
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", images, "-R"]);
    assertEquals(r.code, 0, r.stderr);
    const core = [...Deno.readDirSync(images)].find((e) => e.name.startsWith("core-"))!.name;

    Deno.chmodSync(`${images}/${core}`, 0o666);
    let res = await runCkpt(["restore", "-D", images, "-d"]);
    assertEquals(res.code, 1);
    assertMatch(res.stderr, /core-\d+\.img: the image is writable by others .*--trust-images\n$/);
    // Trusted, it gets past the check (and stops at the taken pid).
    res = await runCkpt(["restore", "-D", images, "-d", "--trust-images"]);
    assertMatch(res.stderr, /pid \d+ is taken/);
    Deno.chmodSync(`${images}/${core}`, 0o600);

    Deno.chownSync(images, 65534, 65534);
    res = await runCkpt(["restore", "-D", images, "-d"]);
    assertMatch(res.stderr, /images directory is owned by uid 65534, not by you/);
    Deno.chownSync(images, 0, 0);

    // A symlink in place of an image is never followed.
    Deno.renameSync(`${images}/${core}`, `${root}/${core}`);
    Deno.symlinkSync(`${root}/${core}`, `${images}/${core}`);
    res = await runCkpt(["restore", "-D", images, "-d", "--trust-images"]);
    assertEquals(res.code, 1);
    assertMatch(res.stderr, /core-\d+\.img: not a regular file/);
    Deno.removeSync(`${images}/${core}`);
    Deno.renameSync(`${root}/${core}`, `${images}/${core}`);

    // Another ckpt (this test, through the library's locks) working on the
    // same process, then on the same directory: refused by name.
    const held = new Locks();
    held.pid(p.pid, "dumping");
    res = await runCkpt(["dump", "-t", String(p.pid), "-D", `${root}/b`, "-R"]);
    assertEquals(res.code, 1);
    assertEquals(
      res.stderr,
      `ckpt: another ckpt is dumping pid ${p.pid} (ckpt pid ${Deno.pid}); wait for it to finish\n`,
    );
    held.release();
    held.dir(images);
    res = await runCkpt(["restore", "-D", images, "-d"]);
    assertMatch(res.stderr, /images: another ckpt \(pid \d+.*\) is using this images directory/);
    held.release();
    assertEquals(tracer(p.pid), 0);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a deleted file is recreated without following a symlink planted on its path", async () => {
  const root = await tempDir("faults-ghost");
  const log = `${root}/log`;
  Deno.mkdirSync(`${root}/sub`);
  Deno.mkdirSync(`${root}/elsewhere`);
  const prog = [
    "import os, time",
    `f = open("${root}/sub/ghost", "w+")`,
    'f.write("ghost content"); f.flush()',
    `os.unlink("${root}/sub/ghost")`,
    `out = open("${log}", "a")`,
    "i = 0",
    "while True:",
    "    f.seek(0); print(i, f.read(), file=out, flush=True); i += 1; time.sleep(0.02)",
  ].join("\n");
  const p = startSession(["python3", "-c", prog]);
  const images = `${root}/images`;
  try {
    await until("python runs", () => readText(log).includes("ghost content"));
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", images]);
    assertEquals(r.code, 0, r.stderr);
    await p.status;
    await until("pid free", () => gone(p.pid));

    Deno.renameSync(`${root}/sub`, `${root}/sub.real`);
    Deno.symlinkSync(`${root}/elsewhere`, `${root}/sub`);
    const res = await runCkpt(["restore", "-D", images, "-d"]);
    assertEquals(res.code, 1);
    assertMatch(res.stderr, /cannot recreate deleted file .*sub\/ghost: a symlink is on its path/);
    assertEquals([...Deno.readDirSync(`${root}/elsewhere`)], [], "nothing written through it");
    assert(gone(p.pid));

    Deno.removeSync(`${root}/sub`);
    Deno.renameSync(`${root}/sub.real`, `${root}/sub`);
    const ok = await runCkpt(["restore", "-D", images, "-d"]);
    assertEquals(ok.code, 0, ok.stderr);
    const n = readText(log).length;
    await until("restored copy runs", () => readText(log).length > n);
    assertStringIncludes(readText(log).slice(n), "ghost content");
    assertEquals([...Deno.readDirSync(`${root}/sub`)], [], "the ghost is unlinked again");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(root, { recursive: true });
  }
});
