// What keeps ckpt from trusting, handing over or changing what it should
// not: one trust check for every image source (the directory and those above
// it, every parent image, a --stream file on stdin), --inherit-fd limited to
// the caller's fds of the right kind, a dump that leaves what it did not
// create as it was and cleans up what it did, the launcher that execs Deno
// directly, and one-line refusals where ckpt used to hang or say EPERM.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { CKPT, pathWithoutDeno, runCkpt } from "./helpers/ckpt.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  startSession,
  startSessionPiped,
  tempDir,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";
import { tempUser } from "./helpers/user.ts";

const dec = new TextDecoder();

async function counter(dir: string) {
  const p = startSession([`${WORKLOADS}/counter`, dir, "4"]);
  await until("counter start", () => readText(`${dir}/log`).includes("start"));
  return p;
}

/** Runs a shell script with $CKPT and DENO_BIN set (fds and stdin as the
 * script arranges them). */
async function sh(script: string, env: Record<string, string> = {}) {
  const o = await new Deno.Command("bash", {
    args: ["-c", script],
    env: { DENO_BIN: Deno.execPath(), CKPT, NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: o.code, stdout: dec.decode(o.stdout), stderr: dec.decode(o.stderr) };
}

function oneLine(stderr: string, re: RegExp) {
  assertMatch(stderr, /^ckpt: [^\n]+\n$/, `one line: ${stderr}`);
  assertMatch(stderr, re);
}

Deno.test("parent images, stdin streams and the directories above images are checked like the images", async () => {
  const dir = await tempDir("trust");
  const u = await tempUser();
  const p = await counter(dir);
  try {
    // A pre-dump in a directory of the user's: ckpt writes it 0700, but the
    // user may rename it away and put other images in its place.
    const pre = `${u.dir}/pre`;
    let r = await runCkpt(["pre-dump", "-t", String(p.pid), "-D", pre]);
    assertEquals(r.code, 0, r.stderr);
    r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/img`, "--prev-images-dir", pre]);
    assertEquals(r.code, 0, r.stderr);
    await p.status;
    await until("pid free", () => gone(p.pid));
    r = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
    assertEquals(r.code, 1);
    oneLine(r.stderr, /pre.*--prev-images-dir.*owned by uid \d+, who could put other images/);
    assert(gone(p.pid), "nothing started");
    // Writable by others: the same.
    Deno.chownSync(u.dir, 0, 0);
    Deno.chmodSync(pre, 0o777);
    r = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
    assertEquals(r.code, 1);
    oneLine(r.stderr, /parent images .*pre .*writable by others \(mode 0777\)/);
    r = await runCkpt(["restore", "-D", `${dir}/img`, "-d", "--trust-images"]);
    assertEquals(r.code, 0, r.stderr);
    assert(alive(p.pid));
    await killAndForget(p.pid);

    // The images directory itself below a directory of the user's.
    Deno.chownSync(u.dir, u.uid, u.gid);
    Deno.renameSync(`${dir}/img`, `${u.dir}/img`);
    r = await runCkpt(["restore", "-D", `${u.dir}/img`, "-d"]);
    assertEquals(r.code, 1);
    oneLine(r.stderr, /a directory above the images directory, is owned by uid \d+/);
    assert(gone(p.pid));

    // A stream on stdin from a file of the user's: refused; through a pipe:
    // what the operator's command connected.
    Deno.mkdirSync(`${dir}/s`);
    const s = await counter(`${dir}/s`);
    r = await sh(`"$CKPT" dump -t ${s.pid} --stream > ${u.dir}/stream`);
    assertEquals(r.code, 0, r.stderr);
    await s.status;
    await until("pid free", () => gone(s.pid));
    Deno.chownSync(`${u.dir}/stream`, u.uid, u.gid);
    r = await sh(`"$CKPT" restore --stream -d < ${u.dir}/stream`);
    assertEquals(r.code, 1);
    oneLine(r.stderr, /stream file on stdin is owned by uid \d+, not by you/);
    assert(gone(s.pid));
    r = await sh(`cat ${u.dir}/stream | "$CKPT" restore --stream -d`);
    assertEquals(r.code, 0, r.stderr);
    assert(alive(s.pid));
    await killAndForget(s.pid);
  } finally {
    await killAndForget(p.pid);
    await u.remove();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--inherit-fd: only an fd the caller passed, of the kind the dump had; through ./ckpt without Deno on PATH", async () => {
  const dir = await tempDir("inherit");
  const log = `${dir}/log`;
  let pid = 0;
  try {
    const p = startSessionPiped([`${WORKLOADS}/pipeflags`, dir]);
    pid = p.pid;
    await until("workload start", () => readText(log).includes("start"));
    const stdinIno = Deno.readLinkSync(`/proc/${p.pid}/fd/0`);
    let r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(r.code, 0, r.stderr);
    await p.status;
    await until(`pid ${pid} free`, () => gone(pid));
    const img = `${dir}/images`;

    // fd 3 was not given: it is one of ckpt's own (Deno's cache, its event loop…).
    r = await runCkpt(["restore", "-D", img, "-d", "--inherit-fd", `fd[3]:${stdinIno}`]);
    assertEquals(r.code, 2);
    oneLine(r.stderr, /fd\[3\].*fd 3 was not passed to ckpt by its caller/);
    r = await runCkpt(["restore", "-D", img, "-d", "--inherit-fd", `fd[99999999999]:${stdinIno}`]);
    assertEquals(r.code, 2);
    oneLine(r.stderr, /fd 99999999999 is out of range/);
    // Given, but a file where the dump had a pipe.
    r = await sh(`"$CKPT" restore -D ${img} -d --inherit-fd 'fd[5]:${stdinIno}' 5</etc/hostname`);
    assertEquals(r.code, 2);
    oneLine(r.stderr, /fd\[5\]:pipe:\[\d+\]: fd 5 is a regular file, not a pipe/);
    r = await sh(`"$CKPT" restore -D ${img} -d --inherit-fd 'fd[5]:pipe:[1]' 5</etc/hostname`);
    assertEquals(r.code, 2);
    oneLine(r.stderr, /the dump has no file pipe:\[1\]/);
    assert(gone(pid), "nothing started");

    // The real thing: a pipe on fd 5, through the launcher with no DENO_BIN
    // and no deno on PATH (it execs the pinned Deno from .toolchain/).
    r = await sh(
      `exec 5< <(echo sent-through-fd-5); ` +
        `env -u DENO_BIN PATH="${pathWithoutDeno()}" "$CKPT" restore -D ${img} -d ` +
        `--inherit-fd 'fd[5]:${stdinIno}'`,
      {},
    );
    assertEquals(r.code, 0, r.stderr);
    Deno.kill(pid, "SIGUSR2");
    await until("stdin read", () => readText(log).includes("stdin="));
    assertStringIncludes(readText(log), "stdin=sent-through-fd-5| eof");
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the launcher execs the pinned Deno directly, fast, without Deno on PATH", async () => {
  const env = { PATH: pathWithoutDeno(), HOME: Deno.env.get("HOME") ?? "/root" };
  // Once, to find or install it.
  let o = await new Deno.Command(CKPT, { args: ["--version"], env, clearEnv: true }).output();
  assertEquals(o.code, 0, dec.decode(o.stderr));
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    o = await new Deno.Command(CKPT, { args: ["--version"], env, clearEnv: true }).output();
    times.push(performance.now() - t0);
    assertEquals(dec.decode(o.stdout).trim(), "ckpt 0.1.0");
  }
  times.sort((a, b) => a - b);
  assert(times[1] < 500, `./ckpt --version took ${times[1].toFixed(0)} ms (median of 3)`);
  // The process the caller started is Deno itself: no npm, no node between.
  const child = new Deno.Command(CKPT, {
    args: ["restore", "--stream", "-d"],
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    await until("ckpt started", () => {
      try {
        return Deno.readLinkSync(`/proc/${child.pid}/exe`).endsWith("/deno");
      } catch {
        return false;
      }
    });
    const stat = readText(`/proc/${child.pid}/stat`);
    assertEquals(Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]), Deno.pid);
  } finally {
    await child.stdin.close();
    const out = await child.output();
    assertEquals(out.code, 1, "an empty stream is refused");
    assertStringIncludes(dec.decode(out.stderr), "image stream");
  }
});

Deno.test("dump leaves an existing -D as it was, removes what it created when refused, and no lock files pile up", async () => {
  const dir = await tempDir("dumpdir");
  const p = await counter(dir);
  try {
    // An existing world-writable sticky directory keeps its mode.
    const shared = `${dir}/shared`;
    Deno.mkdirSync(shared);
    Deno.chmodSync(shared, 0o1777);
    // Restore would refuse images there: a killing dump is refused before
    // anything is frozen, one that lets the tree run warns.
    let r = await runCkpt(["dump", "-t", String(p.pid), "-D", shared]);
    assertEquals(r.code, 1);
    assertStringIncludes(r.stderr, "restore would refuse the images; dump into a directory");
    assertEquals(alive(p.pid), true);
    assertEquals([...Deno.readDirSync(shared)], [], "nothing written");
    r = await runCkpt(["dump", "-t", String(p.pid), "-D", shared, "-R"]);
    assertEquals(r.code, 0, r.stderr);
    assertStringIncludes(r.stderr, "restore would refuse the images unless given --trust-images");
    assertEquals(Deno.statSync(shared).mode! & 0o7777, 0o1777, "-D /tmp must not break /tmp");
    assertEquals(Deno.statSync(`${shared}/inventory.img`).mode! & 0o777, 0o600);
    // No lock file is left for the pid.
    assertEquals(
      [...Deno.readDirSync("/run/ckpt")].filter((e) => e.name === `pid-${p.pid}.lock`),
      [],
    );
    // A refused dump (a zombie can't be dumped) takes the directories it made.
    const z = startSession([
      "/usr/bin/python3",
      "-c",
      "import os, time\nif os.fork() == 0: os._exit(0)\ntime.sleep(60)",
    ]);
    let zombie = 0;
    await until("zombie", () => {
      const kids = readText(`/proc/${z.pid}/task/${z.pid}/children`).trim();
      zombie = Number(kids) || 0;
      return zombie > 0 && readText(`/proc/${zombie}/stat`).includes(") Z ");
    });
    r = await runCkpt(["dump", "-t", String(zombie), "-D", `${dir}/new/deeper/img`]);
    assertEquals(r.code, 1);
    oneLine(r.stderr, /is a zombie .*nothing is left to dump/);
    assert(
      !readText(`${dir}/new`) && ![...Deno.readDirSync(dir)].some((e) => e.name === "new"),
      "the directories the refused dump made are gone",
    );
    await killAndForget(z.pid);
    // Again and again: never a lock file left for the pid (other ckpts on
    // this machine may hold locks of their own in /run/ckpt meanwhile).
    for (let i = 0; i < 3; i++) {
      r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/d${i}`, "-R"]);
      assertEquals(r.code, 0, r.stderr);
      assert(!readText(`/run/ckpt/pid-${p.pid}.lock`) && !exists(`/run/ckpt/pid-${p.pid}.lock`));
    }
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("one-line refusals: a PID namespace's init from inside, a kernel thread, huge numbers, missing capabilities", async () => {
  const dir = await tempDir("refusals");
  // An init of its own PID namespace (unshare forks it as pid 1 there).
  const ns = new Deno.Command("unshare", {
    args: ["--pid", "--fork", "--mount-proc", `${WORKLOADS}/sleeper`, `${dir}/log`, "100000"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let init = 0;
  try {
    await until("namespace init", () => {
      init = Number(readText(`/proc/${ns.pid}/task/${ns.pid}/children`).trim()) || 0;
      return init > 0 && /NSpid:\s+\d+\s+1$/m.test(readText(`/proc/${init}/status`));
    });
    // ckpt inside that namespace (nsenter), dumping pid 1: the kernel would
    // ignore its SIGKILL, and the dump used to wait for it forever.
    const t0 = performance.now();
    const r = await sh(
      `timeout 60 nsenter -t ${init} -p -m env DENO_BIN="$DENO_BIN" "$CKPT" dump -t 1 -D ${dir}/img`,
    );
    assert(performance.now() - t0 < 30_000, "no hang");
    assertEquals(r.code, 1, r.stderr);
    oneLine(r.stderr, /pid 1 \(sleeper\) is the init of ckpt's own PID namespace/);
    assert(alive(init), "it runs on");
    assert(!readText(`${dir}/img/inventory.img`), "no images");
  } finally {
    try {
      ns.kill("SIGKILL");
    } catch { /* gone */ }
    await ns.status;
    if (init) await killAndForget(init);
  }
  try {
    let r = await runCkpt(["dump", "-t", "2", "-D", `${dir}/k`]);
    assertEquals(r.code, 1);
    oneLine(r.stderr, /pid 2 \(kthreadd\) is a kernel thread: there is nothing to dump/);
    r = await runCkpt(["dump", "-t", "99999999999", "-D", `${dir}/k`]);
    assertEquals(r.code, 2);
    oneLine(r.stderr, /--tree: 99999999999 is above 4194304/);

    // Without the capabilities: which ones, not a raw EPERM.
    const p = await counter(dir);
    try {
      const o = await sh(
        `setpriv --bounding-set -checkpoint_restore,-sys_admin "$CKPT" dump -t ${p.pid} -D ${dir}/c`,
      );
      assertEquals(o.code, 1);
      oneLine(
        o.stderr,
        /dump needs root, or these capabilities ckpt lacks: CAP_CHECKPOINT_RESTORE/,
      );
      assert(alive(p.pid));
    } finally {
      await killAndForget(p.pid);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function exists(p: string): boolean {
  try {
    Deno.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}
