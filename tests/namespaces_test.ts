// Namespaces: "containers" (the init of new PID, UTS and IPC namespaces, made
// by a launcher of ours or by util-linux unshare) dumped and restored into new
// namespaces, checked by what the restored tasks report from inside; host
// trees restored into a new time namespace; and what is refused.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { CKPT, runCkpt } from "./helpers/ckpt.ts";
import { ensureProgram } from "./helpers/packages.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  type Started,
  startSession,
  tempDir,
  threadState,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";

/** The first child of pid (the launcher's one program). */
async function childOf(pid: number): Promise<number> {
  let kid = 0;
  await until(`a child of ${pid}`, () => {
    kid = Number(readText(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/)[0] || 0);
    return kid > 0;
  });
  return kid;
}

function nsPid(pid: number): number[] {
  const m = /^NSpid:\s+(.*)$/m.exec(readText(`/proc/${pid}/status`));
  return m ? m[1].trim().split(/\s+/).map(Number) : [];
}

function nsLink(pid: number, kind: string): string {
  return Deno.readLinkSync(`/proc/${pid}/ns/${kind}`);
}

interface Report {
  [k: string]: string;
}

function reports(log: string, word: string): Report[] {
  return log.split("\n").filter((l) => l.startsWith(`${word} `)).map((l) =>
    Object.fromEntries([...l.matchAll(/(\w+)=(\S*)/g)].map((m) => [m[1], m[2]]))
  );
}

/** Asks the container for a report and returns it. */
async function report(pid: number, log: string): Promise<Report> {
  const n = reports(readText(log), "report").length;
  Deno.kill(pid, "SIGUSR1");
  await until("a report", () => reports(readText(log), "report").length > n);
  return reports(readText(log), "report")[n];
}

async function dumpRestoreContainer(launcher: Started, init: number, dir: string, log: string) {
  const kid = Number(reports(readText(log), "ready")[0].kid);
  assertEquals(nsPid(init).length, 2, "the init has a pid at two levels");
  const before = await report(init, log);
  const kidLevels = allChildren(init).map(nsPid);
  const images = `${dir}/images`;
  const d = await runCkpt(["dump", "-t", String(init), "-D", images]);
  assertEquals(d.code, 0, `dump failed: ${d.stderr}`);
  await launcher.status;
  await until(`pid ${init} free`, () => gone(init));
  for (const l of kidLevels) await until(`pid ${l[0]} free`, () => gone(l[0]));
  const r = await runCkpt(["restore", "-D", images, "-d"]);
  assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
  assert(alive(init), "the init runs again");
  assertEquals(nsPid(init), [init, 1], "the init is pid 1 in its PID namespace again");
  assertEquals(allChildren(init).map(nsPid), kidLevels, "its child has both its pids");
  const after = await report(init, log);
  return { before, after, kid };
}

function allChildren(pid: number): number[] {
  return readText(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/).filter(Boolean)
    .map(Number);
}

/** What the container reported must be the same after restore. */
function assertSameWorld(before: Report, after: Report, kid: number) {
  for (
    const k of [
      "pid",
      "ppid",
      "host",
      "dom",
      "ida",
      "suma",
      "nattch",
      "idb",
      "sumb",
      "idc",
      "c",
      "sem",
      "msq",
      "qnum",
      "mqcur",
      "kid",
    ]
  ) {
    assertEquals(after[k], before[k], `${k} after restore`);
  }
  assertEquals(after.pid, "1");
  assertEquals(after.host, "ckpt-box");
  assertEquals(after.dom, "ckpt.example");
  assertEquals(after.c, "unattached", "the segment nobody had attached kept its content");
  assertEquals(after.sem, `${after.sem.split(":")[0]}:3,7,11`);
  assertEquals(after.qnum, "3");
  assertEquals(after.mqcur, "4");
  assertEquals(after.kidsays, `${kid}`, "the child sees its own pid inside");
  assert(Number(after.counter) > Number(before.counter), "the child bumps the shared counter");
}

async function drain(pid: number, log: string): Promise<Report> {
  Deno.kill(pid, "SIGUSR2");
  await until("a drain report", () => reports(readText(log), "drain").length > 0);
  return reports(readText(log), "drain")[0];
}

function assertDrained(d: Report) {
  assertEquals(d.msgs, "1:one,2:two,1:three,", "System V messages, in order");
  assertEquals(d.mq, "9:high,9:high2,5:mid,1:low,", "POSIX messages, by priority then order");
  assertEquals(d.shmdt, "0", "the removed segment's attach is a real System V attach");
}

Deno.test("container (own PID, UTS and IPC namespaces): SysV shm, semaphores, messages, POSIX mqueue and hostname come back", async () => {
  const dir = await tempDir("ns-container");
  const log = `${dir}/log`;
  const launcher = startSession([
    `${WORKLOADS}/nslaunch`,
    "pid,uts,ipc",
    `${WORKLOADS}/nsworld`,
    dir,
  ]);
  let init = 0;
  try {
    init = await childOf(launcher.pid);
    await until("container ready", () => readText(log).includes("ready"));
    // A dump that lets it run on reads its queues by emptying and refilling
    // them: they must be as they were (the drain at the end says so).
    const dry = await runCkpt(["dump", "-t", String(init), "--dry-run"]);
    assertEquals(dry.code, 0, dry.stderr);
    const r = await runCkpt(["dump", "-t", String(init), "-D", `${dir}/first`, "-R"]);
    assertEquals(r.code, 0, r.stderr);
    assert(alive(init));
    // Its frozen copies (pid 3 and 4 inside) were reaped by their tasks.
    assertEquals(allChildren(init).length, 1, "no copy left behind");
    assertEquals(allChildren(allChildren(init)[0]).length, 0, "no copy left behind");
    const { before, after, kid } = await dumpRestoreContainer(launcher, init, dir, log);
    assertSameWorld(before, after, kid);
    assert(nsLink(init, "ipc") !== nsLink(Deno.pid, "ipc"), "a new IPC namespace");
    assert(nsLink(init, "uts") !== nsLink(Deno.pid, "uts"), "a new UTS namespace");
    assertEquals(
      Deno.readTextFileSync("/proc/sys/kernel/hostname").trim() !== "ckpt-box",
      true,
      "the host's own name is untouched",
    );
    // Both tasks map segment A through real attaches again.
    const maps = readText(`/proc/${init}/maps`).split("\n").filter((l) => l.includes("/SYSV"));
    assertEquals(maps.filter((l) => l.includes("SYSV6b707431")).length, 2, maps.join("\n"));
    assertDrained(await drain(init, log));
  } finally {
    if (init) await killAndForget(init);
    await killAndForget(launcher.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("container made by util-linux unshare --pid --fork --uts --ipc comes back", async () => {
  const unshare = await ensureProgram("unshare", "util-linux");
  const dir = await tempDir("ns-unshare");
  const log = `${dir}/log`;
  const launcher = startSession([
    unshare,
    "--pid",
    "--fork",
    "--uts",
    "--ipc",
    `${WORKLOADS}/nsworld`,
    dir,
  ]);
  let init = 0;
  try {
    init = await childOf(launcher.pid);
    await until("container ready", () => readText(log).includes("ready"));
    const { before, after, kid } = await dumpRestoreContainer(launcher, init, dir, log);
    assertSameWorld(before, after, kid);
    assertDrained(await drain(init, log));
  } finally {
    if (init) await killAndForget(init);
    await killAndForget(launcher.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("threads of a PID namespace's init keep their tids at both levels", async () => {
  const dir = await tempDir("ns-threads");
  const log = `${dir}/log`;
  const launcher = startSession([`${WORKLOADS}/nslaunch`, "pid", `${WORKLOADS}/threads`, log]);
  let init = 0;
  try {
    init = await childOf(launcher.pid);
    await until("threads start", () => readText(log).includes("start"));
    const tids = () =>
      [...Deno.readDirSync(`/proc/${init}/task`)].map((e) => Number(e.name)).sort((a, b) => a - b)
        .map((t) => nsPid(t));
    const threadsReport = async () => {
      const n = (readText(log).match(/^report/gm) ?? []).length;
      Deno.kill(init, "SIGUSR1");
      await until("a report", () => (readText(log).match(/^report/gm) ?? []).length > n);
      const line = readText(log).split("\n").filter((l) => l.startsWith("report"))[n];
      return line.split(" ").slice(1).map((w) => w.split(":").map(Number));
    };
    const before = tids();
    assertEquals(before.length, 8);
    const r1 = await threadsReport();
    assertEquals(r1.map((x) => x[0]).sort((a, b) => a - b), before.map((l) => l[1]));
    const d = await runCkpt(["dump", "-t", String(init), "-D", `${dir}/images`]);
    assertEquals(d.code, 0, d.stderr);
    await launcher.status;
    await until(`pid ${init} free`, () => gone(init));
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(tids(), before, "every thread has its tid at both levels");
    const r2 = await threadsReport();
    assertEquals(r2.map((x) => x[0]).sort((a, b) => a - b), before.map((l) => l[1]));
    // Every worker makes progress after restore.
    await new Promise((res) => setTimeout(res, 100));
    const r3 = await threadsReport();
    for (let i = 0; i < 7; i++) assert(r3[i][1] > r2[i][1], `thread ${r3[i][0]} runs`);
  } finally {
    if (init) await killAndForget(init);
    await killAndForget(launcher.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

function ticks(path: string): { n: number; mono: number; boot: number }[] {
  return [...readText(path).matchAll(/^tick (\d+) mono=(\d+) boot=(\d+)$/gm)].map((m) => ({
    n: +m[1],
    mono: +m[2],
    boot: +m[3],
  }));
}

async function clocksAcrossRestore(restoreArgs: string[], launch: string[] = []) {
  const dir = await tempDir("ns-time");
  const path = `${dir}/ticks`;
  const launcher = startSession([...launch, `${WORKLOADS}/clocks`, dir]);
  let pid = launcher.pid;
  try {
    if (launch.length) pid = await childOf(launcher.pid);
    await until("some ticks", () => ticks(path).length >= 3);
    const d = await runCkpt(["dump", "-t", String(pid), "-D", `${dir}/images`]);
    assertEquals(d.code, 0, d.stderr);
    await launcher.status;
    const last = ticks(path).at(-1)!;
    await until(`pid ${pid} free`, () => gone(pid));
    // Time spent dumped, which the clocks should not see with a time namespace.
    await new Promise((r) => setTimeout(r, 1500));
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d", ...restoreArgs]);
    assertEquals(r.code, 0, r.stderr);
    await until("ticks after restore", () => ticks(path).length >= last.n + 4);
    const next = ticks(path).find((t) => t.n === last.n + 1)!;
    const offsets = readText(`/proc/${pid}/timens_offsets`);
    return { last, next, offsets, timeNs: nsLink(pid, "time") };
  } finally {
    await killAndForget(pid);
    await killAndForget(launcher.pid);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("host tree restored with --time-ns: CLOCK_MONOTONIC and CLOCK_BOOTTIME go on from their dump-time values", async () => {
  const { last, next, timeNs } = await clocksAcrossRestore(["--time-ns"]);
  assert(timeNs !== nsLink(Deno.pid, "time"), "a new time namespace");
  // 100 ms ticks: the next one comes 100 ms (on the tree's clock) after the
  // last one before the dump, not 1.5 s and more later.
  const gap = next.mono - last.mono;
  assert(gap >= 50 && gap < 700, `monotonic gap ${gap} ms across a 1.5 s pause`);
  assert(next.boot - last.boot < 700, `boottime gap ${next.boot - last.boot} ms`);
});

Deno.test("host tree restored without --time-ns: its monotonic clock jumps (the control)", async () => {
  const { last, next, timeNs } = await clocksAcrossRestore([]);
  assertEquals(timeNs, nsLink(Deno.pid, "time"), "ckpt's own time namespace");
  assert(next.mono - last.mono >= 1500, `gap ${next.mono - last.mono} ms`);
});

Deno.test("a tree in a time namespace of its own keeps its clocks (offsets of a day)", async () => {
  const { last, next, offsets, timeNs } = await clocksAcrossRestore([], [
    `${WORKLOADS}/nslaunch`,
    "time",
  ]);
  assert(timeNs !== nsLink(Deno.pid, "time"));
  const gap = next.mono - last.mono;
  assert(gap >= 50 && gap < 700, `monotonic gap ${gap} ms`);
  // The day it was ahead of the host stays (less the time spent dumped).
  const mono = Number(/^monotonic\s+(-?\d+)/m.exec(offsets)![1]);
  assert(mono > 86390 && mono <= 86400, offsets);
});

Deno.test("refused: host filesystems in a mount namespace of its own not named --external, a PID namespace it is not the init of", async () => {
  const unshare = await ensureProgram("unshare", "util-linux");
  const dir = await tempDir("ns-refused");
  const launcher = startSession([unshare, "--mount", "--pid", "--fork", "sleep", "60"]);
  try {
    const init = await childOf(launcher.pid);
    const r = await runCkpt(["dump", "-t", String(init), "-D", `${dir}/a`, "--shell-job"]);
    assertEquals(r.code, 1);
    // unshare --mount copies ckpt's mounts: each is the host's, and the
    // refusal names the option that would save it as such.
    assertMatch(r.stderr, /at \/proc \(proc proc\) is a filesystem of the host/);
    assertStringIncludes(r.stderr, "--external mnt[/proc]:KEY");
    assert(alive(init), "the tree runs on");
  } finally {
    await killAndForget(launcher.pid);
  }
  const inner = startSession([
    `${WORKLOADS}/nslaunch`,
    "pid",
    "sh",
    "-c",
    "sleep 60 & wait",
  ]);
  try {
    const init = await childOf(inner.pid);
    const sleeper = await childOf(init);
    const r = await runCkpt(["dump", "-t", String(sleeper), "-D", `${dir}/b`, "--shell-job"]);
    assertEquals(r.code, 1);
    assertStringIncludes(r.stderr, "not the namespace's init; dump the tree from the init");
  } finally {
    await killAndForget(inner.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ckpt inside a PID namespace: its init is refused for a dump that would kill it (never a hang), dumped with --leave-running or --leave-stopped", async () => {
  const unshare = await ensureProgram("unshare", "util-linux");
  const nsenter = await ensureProgram("nsenter", "util-linux");
  const dir = await tempDir("ns-own-init");
  // Its own mount namespace with a /proc of its PID namespace, so that ckpt
  // entered into both sees pids as the namespace does.
  const launcher = startSession([
    unshare,
    "--pid",
    "--fork",
    "--mount-proc",
    "setsid",
    "sh",
    "-c",
    "sleep 60 & wait",
  ]);
  const inside = async (args: string[]) => {
    const out = await new Deno.Command(nsenter, {
      args: ["-t", String(init), "-p", "-m", "--", CKPT, ...args],
      env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  };
  let init = 0;
  try {
    init = await childOf(launcher.pid);
    await until("the init's child", () => allChildren(init).length > 0);
    const r = await inside(["dump", "-t", "1", "-D", `${dir}/a`]);
    assertEquals(r.code, 1, r.stderr);
    assertStringIncludes(r.stderr, "is the init of ckpt's own PID namespace");
    assert(alive(init), "the init runs on");
    assert(!readText(`${dir}/a/inventory.img`), "nothing is left that restore would take");
    const ok = await inside(["dump", "-t", "1", "-D", `${dir}/b`, "--leave-running"]);
    assertEquals(ok.code, 0, ok.stderr);
    assert(alive(init), "the init runs on after --leave-running");
    assertEquals(threadState(init) !== "t" && threadState(init) !== "T", true, "not left stopped");
    const show = await runCkpt(["show", `${dir}/b`]);
    assertEquals(show.code, 0, show.stderr);
    // --leave-stopped: every task stopped, the init too (a SIGSTOP given at
    // detach would be dropped; one sent while it is traced is not).
    const stopped = await inside(["dump", "-t", "1", "-D", `${dir}/c`, "--leave-stopped"]);
    assertEquals(stopped.code, 0, stopped.stderr);
    await until("the init stopped", () => threadState(init) === "T");
    const kid = allChildren(init)[0];
    assertEquals(threadState(kid), "T", "its child stopped too");
    Deno.kill(init, "SIGCONT");
    Deno.kill(kid, "SIGCONT");
    await until("running again", () => threadState(init) === "S");
  } finally {
    await killAndForget(launcher.pid);
    if (init) await killAndForget(init);
    await Deno.remove(dir, { recursive: true });
  }
});

for (const deny of [false, true]) {
  Deno.test(`container in a user namespace of its own (setgroups ${deny ? "denied" : "allowed"}): ids, maps and every namespace come back`, async () => {
    const dir = await tempDir("ns-user");
    // Its root is uid 100000 here: it writes its log as that, in a
    // directory of its own (the images' may be writable by nobody else).
    await Deno.chmod(dir, 0o711);
    await Deno.mkdir(`${dir}/out`, { mode: 0o777 });
    await Deno.chmod(`${dir}/out`, 0o777);
    const log = `${dir}/out/log`;
    const kinds = `${deny ? "user-deny" : "user"},pid,uts,ipc${deny ? ",time" : ""}`;
    const launcher = startSession([
      `${WORKLOADS}/nslaunch`,
      kinds,
      `${WORKLOADS}/nsworld`,
      `${dir}/out`,
    ]);
    let init = 0;
    try {
      init = await childOf(launcher.pid);
      await until("container ready", () => readText(log).includes("ready"));
      const status = (p: number, key: string) =>
        new RegExp(`^${key}:\\s+(.*)$`, "m").exec(readText(`/proc/${p}/status`))?.[1].trim();
      const uidMap = readText(`/proc/${init}/uid_map`).trim().split(/\s+/).join(" ");
      assertEquals(uidMap, "0 100000 65536");
      const ids = ["Uid", "Gid", "Groups", "CapEff"].map((k) => status(init, k));
      const before = await report(init, log);
      const images = `${dir}/images`;
      const d = await runCkpt(["dump", "-t", String(init), "-D", images]);
      assertEquals(d.code, 0, d.stderr);
      await launcher.status;
      await until(`pid ${init} free`, () => gone(init));
      const r = await runCkpt(["restore", "-D", images, "-d"]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(readText(`/proc/${init}/uid_map`).trim().split(/\s+/).join(" "), uidMap);
      assertEquals(readText(`/proc/${init}/gid_map`).trim().split(/\s+/).join(" "), uidMap);
      assertEquals(readText(`/proc/${init}/setgroups`).trim(), deny ? "deny" : "allow");
      assertEquals(["Uid", "Gid", "Groups", "CapEff"].map((k) => status(init, k)), ids);
      assertEquals(nsPid(init), [init, 1]);
      // The child keeps its pid inside; here it has whatever pid it got.
      const kids = allChildren(init);
      assertEquals(kids.map((k) => nsPid(k)[1]), [Number(before.kid)]);
      assertEquals(status(kids[0], "Uid"), "100000\t100000\t100000\t100000");
      assert(nsLink(init, "user") !== nsLink(Deno.pid, "user"));
      const after = await report(init, log);
      assertSameWorld(before, after, Number(before.kid));
      assertDrained(await drain(init, log));
    } finally {
      if (init) await killAndForget(init);
      await killAndForget(launcher.pid);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("cgroup namespace: rooted at the same cgroup after restore (the tree sees /, ckpt its path)", async () => {
  const unified = "/sys/fs/cgroup/unified";
  const own = /^0::(.*)$/m.exec(readText("/proc/self/cgroup"))?.[1];
  assert(own !== undefined && readText(`${unified}/cgroup.procs`) !== undefined, "cgroup v2");
  const dir = await tempDir("ns-cgroup");
  const name = `ckpt-test-${crypto.randomUUID().slice(0, 8)}`;
  const cg = `${unified}${own === "/" ? "" : own}/${name}`;
  await Deno.mkdir(cg);
  const view = `${dir}/view`;
  // The launcher moves itself into the cgroup, then makes the namespace.
  const launcher = startSession([
    "sh",
    "-c",
    `echo $$ > ${cg}/cgroup.procs && exec ${WORKLOADS}/nslaunch cgroup,pid sh -c ` +
    `'while :; do cat /proc/self/cgroup > ${view}.tmp; mv ${view}.tmp ${view}; sleep 0.05; done'`,
  ]);
  let init = 0;
  try {
    init = await childOf(launcher.pid);
    await until("the view from inside", () => readText(view).includes("0::/"));
    assertStringIncludes(readText(view), "0::/\n");
    const outside = readText(`/proc/${init}/cgroup`);
    assertStringIncludes(outside, `0::${own === "/" ? "" : own}/${name}\n`);
    const d = await runCkpt(["dump", "-t", String(init), "-D", `${dir}/images`]);
    assertEquals(d.code, 0, d.stderr);
    await launcher.status;
    await until(`pid ${init} free`, () => gone(init));
    await Deno.remove(view);
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assert(nsLink(init, "cgroup") !== nsLink(Deno.pid, "cgroup"), "a new cgroup namespace");
    assertStringIncludes(
      readText(`/proc/${init}/cgroup`),
      `0::${own === "/" ? "" : own}/${name}\n`,
    );
    await until("the view from inside after restore", () => readText(view).includes("0::/"));
    assertStringIncludes(readText(view), "0::/\n", "its namespace is rooted at its cgroup");
  } finally {
    if (init) await killAndForget(init);
    await killAndForget(launcher.pid);
    await until("the cgroup empty", () => !readText(`${cg}/cgroup.procs`).trim()).catch(() => {});
    await Deno.remove(cg).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a PID namespace nested in the container's: its init keeps its pid at all three levels", async () => {
  const dir = await tempDir("ns-nested");
  const launcher = startSession([
    `${WORKLOADS}/nslaunch`,
    "pid",
    `${WORKLOADS}/nslaunch`,
    "pid",
    "sleep",
    "60",
  ]);
  let init = 0;
  try {
    init = await childOf(launcher.pid);
    const inner = await childOf(init);
    await until("sleep runs", () => readText(`/proc/${inner}/comm`).trim() === "sleep");
    const levels = [nsPid(init), nsPid(inner)];
    assertEquals(levels[0].length, 2);
    assertEquals(levels[1].length, 3);
    assertEquals(levels[1][2], 1, "the innermost task is its namespace's init");
    const d = await runCkpt(["dump", "-t", String(init), "-D", `${dir}/images`]);
    assertEquals(d.code, 0, d.stderr);
    await launcher.status;
    await until(`pid ${inner} free`, () => gone(inner) && gone(init));
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals([nsPid(init), nsPid(inner)], levels);
    assert(nsLink(inner, "pid") !== nsLink(init, "pid"), "the nested namespace is its own");
    assertEquals(threadState(inner), "S");
  } finally {
    if (init) await killAndForget(init);
    await killAndForget(launcher.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
