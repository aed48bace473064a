// Process trees and multi-threaded processes: dumped and restored for real,
// then checked through what the restored tasks do.
import { assert, assertEquals, assertGreater, assertMatch } from "../src/deps/std_assert.ts";
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
import { dumpTree, killAll, restoreTree } from "./helpers/tree.ts";

function stat(pid: number) {
  const s = readText(`/proc/${pid}/stat`);
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return { state: f[0], ppid: +f[1], pgid: +f[2], sid: +f[3] };
}

function children(pid: number): number[] {
  return readText(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/).filter(Boolean).map(
    Number,
  );
}

async function dumpKill(
  pid: number,
  status: Promise<Deno.CommandStatus>,
  images: string,
  pids: number[],
) {
  const r = await runCkpt(["dump", "-t", String(pid), "-D", images]);
  assertEquals(r.code, 0, r.stderr);
  await status;
  await until("all pids free", () => pids.every(gone));
}

Deno.test("a 3-level tree with a pipe chain, shared memory, a shared fd, a process group and a zombie", async () => {
  const dir = await tempDir("tree");
  const p = startSession([`${WORKLOADS}/tree`, dir]);
  const root = p.pid;
  const pids: number[] = [];
  try {
    await until("tree started", () => readText(`${dir}/report.log`).includes("start"));
    const m = /start root=(\d+) c1=(\d+) c2=(\d+)/.exec(readText(`${dir}/report.log`))!;
    const c1 = +m[2], c2 = +m[3];
    await until("grandchild", () => children(c1).length === 1);
    const g = children(c1)[0];
    pids.push(root, c1, c2, g);
    await until("zombie", () => stat(c2).state === "Z");
    await until("numbers flow", () => readText(`${dir}/chain.log`).split("\n").length > 20);
    const before = { c1: stat(c1), g: stat(g) };

    await dumpKill(root, p.status, `${dir}/images`, pids);
    const upTo = readText(`${dir}/chain.log`).trim().split("\n").length;

    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    for (const pid of [root, c1, g]) assert(alive(pid), `pid ${pid} is back`);
    assertEquals(stat(c1).ppid, root);
    assertEquals(stat(g).ppid, c1);
    assertEquals(stat(c2).ppid, root);
    assertEquals(stat(c2).state, "Z", "the zombie is still a zombie");
    assertEquals(stat(c1).sid, root);
    assertEquals(stat(c1).pgid, c1, "child1 leads its own group again");
    assertEquals(stat(g).pgid, before.g.pgid);
    assertEquals(stat(root).sid, root);

    await until(
      "chain moves on",
      () => readText(`${dir}/chain.log`).trim().split("\n").length > upTo + 20,
    );
    const nums = readText(`${dir}/chain.log`).trim().split("\n").map(Number);
    nums.forEach((n, i) => assertEquals(n, i, "no number in flight lost or duplicated"));

    Deno.kill(root, "SIGUSR2");
    await until("report", () => readText(`${dir}/report.log`).includes("report"));
    const rep = /report off=(\d+) c0=(\d+) c1=(\d+) c3=(\d+)/.exec(readText(`${dir}/report.log`))!;
    const written = Deno.statSync(`${dir}/shared.txt`).size;
    assertGreater(+rep[1], 0, "root's offset moved with child1's writes: one shared description");
    // Only child1 writes; a root offset that is not 0 moved with its writes.
    assert(+rep[1] <= written, `offset ${rep[1]} within the file (${written})`);
    assertGreater(+rep[3], 0);
    assertGreater(+rep[4], 0);
    const c0 = +rep[2];
    Deno.kill(root, "SIGUSR2");
    await until("second report", () => readText(`${dir}/report.log`).split("report").length > 2);
    const rep2 = [...readText(`${dir}/report.log`).matchAll(/c0=(\d+)/g)].at(-1)!;
    assertGreater(+rep2[1], c0, "shared counters keep moving");

    Deno.kill(root, "SIGUSR1");
    await until("zombie reaped", () => readText(`${dir}/report.log`).includes("reaped"));
    assertMatch(readText(`${dir}/report.log`), new RegExp(`reaped pid=${c2} exited=1 status=42`));
  } finally {
    for (const pid of pids.toReversed()) await killAndForget(pid);
    await killAndForget(root);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("8 threads keep their TIDs and all make progress; a condvar waiter wakes after restore", async () => {
  const dir = await tempDir("threads");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/threads`, log]);
  const reports = () =>
    [...readText(log).matchAll(/^report (.*)$/gm)].map((m) =>
      m[1].split(" ").map((x) => x.split(":").map(Number) as [number, number])
    );
  try {
    await until("threads start", () => readText(log).includes("start"));
    await new Promise((r) => setTimeout(r, 100));
    Deno.kill(p.pid, "SIGUSR1");
    await until("first report", () => reports().length === 1);
    const tids = Deno.readDirSync(`/proc/${p.pid}/task`).map((e) => +e.name).toArray().sort();
    assertEquals(tids.length, 8);

    await dumpKill(p.pid, p.status, `${dir}/images`, [p.pid]);
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    const after = Deno.readDirSync(`/proc/${p.pid}/task`).map((e) => +e.name).toArray().sort();
    assertEquals(after, tids, "same TIDs");

    Deno.kill(p.pid, "SIGUSR1");
    await until("report after restore", () => reports().length === 2);
    Deno.kill(p.pid, "SIGUSR2");
    await until("waiter woken", () => readText(log).includes("woken"));
    await new Promise((r) => setTimeout(r, 100));
    Deno.kill(p.pid, "SIGUSR1");
    await until("third report", () => reports().length === 3);
    const [r1, r2, r3] = reports();
    assertEquals(r2.map((x) => x[0]).sort(), tids, "threads report their own gettid()");
    for (let i = 0; i < 7; i++) assertGreater(r2[i][1], r1[i][1], `thread ${r2[i][0]} progressed`);
    assertEquals(r2[7][1], 0, "the waiter was still waiting");
    assertGreater(r3[7][1], 0, "the waiter runs after being signalled");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a shell pipeline restored mid-stream keeps writing", async () => {
  const dir = await tempDir("pipeline");
  const out = `${dir}/out`;
  const p = startSession(["sh", "-c", `while :; do date +%s%N; sleep 0.05; done | cat > ${out}`]);
  const lines = () => readText(out).trim().split("\n").filter(Boolean).length;
  try {
    await until("pipeline writes", () => lines() > 5);
    const tree = [p.pid, ...children(p.pid)];
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(r.code, 0, r.stderr);
    await p.status;
    await until("tree gone", () => tree.every(gone));
    const n = lines();
    const rr = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(rr.code, 0, rr.stderr);
    await until("more lines after restore", () => lines() > n + 5);
  } finally {
    for (const pid of children(p.pid)) await killAndForget(pid);
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a tree dumped with --leave-running keeps running and its inventory lists all four tasks", async () => {
  const dir = await tempDir("tree-leave");
  const p = startSession([`${WORKLOADS}/tree`, dir]);
  try {
    await until("tree started", () => readText(`${dir}/chain.log`).split("\n").length > 5);
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`, "-R"]);
    assertEquals(r.code, 0, r.stderr);
    const n = readText(`${dir}/chain.log`).length;
    await until("still running", () => readText(`${dir}/chain.log`).length > n);
    const show = await runCkpt(["show", "--compact", `${dir}/images/inventory.img`]);
    assertEquals(JSON.parse(show.stdout).payload.pids.length, 4, "root, two children, grandchild");
  } finally {
    for (const pid of children(p.pid).flatMap((c) => [...children(c), c])) await killAndForget(pid);
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a socketpair between parent and child, with a reply queued, works after restore", async () => {
  const dir = await tempDir("tree-pair");
  const peer = new URL("./peers/tree_pair.py", import.meta.url).pathname;
  const p = startSession(["python3", peer, dir]);
  let pids: number[] = [];
  try {
    await until("pair ready", () => readText(`${dir}/ready`).includes(" "));
    pids = readText(`${dir}/ready`).split(" ").map(Number);
    await until("child got the first message", () => readText(`${dir}/child.log`).length > 0);
    await dumpKill(p.pid, p.status, `${dir}/images`, pids);
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    await Deno.writeTextFile(`${dir}/go`, "");
    await until("replies flow", () => readText(`${dir}/parent.log`).split("\n").length > 4);
    const got = readText(`${dir}/parent.log`).split("\n");
    assertEquals(got[0], "ack:queued-before-dump", "the reply queued at dump comes first");
    assertEquals(got[1], "ack:msg0");
    assertMatch(readText(`${dir}/child.log`), /^queued-before-dump\nmsg0\n/);
  } finally {
    for (const pid of pids.toReversed()) await killAndForget(pid);
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a child sharing its parent's fd table and fs info (CLONE_FILES|CLONE_FS) still does after restore", async () => {
  const dir = await tempDir("sharer");
  const p = startSession([`${WORKLOADS}/sharer`, dir]);
  let child = 0;
  try {
    await until("started", () => readText(`${dir}/parent.log`).includes("start"));
    child = +/child=(\d+)/.exec(readText(`${dir}/parent.log`))![1];
    await until("child runs", () => readText(`${dir}/child.log`).includes("child"));
    await dumpKill(p.pid, p.status, `${dir}/images`, [p.pid, child]);
    const shown = await runCkpt(["show", "--compact", `${dir}/images/core-${child}.img`]);
    const core = JSON.parse(shown.stdout).payload;
    assert(core.shares_files && core.shares_fs, "recorded as sharing");
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(stat(child).ppid, p.pid);
    Deno.kill(p.pid, "SIGUSR1"); // parent opens a new fd and chdirs
    await until("child looked", () => readText(`${dir}/child.log`).includes("fdok="));
    assertMatch(readText(`${dir}/child.log`), new RegExp(`fdok=1 cwd=${dir}/sub`));
  } finally {
    if (child) await killAndForget(child);
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shared anonymous memory written only by a child that has exited comes back with its content (the object's pages, not the tasks' page tables)", async () => {
  const dir = await tempDir("shm-exited");
  // The parent maps 64 pages shared and never touches them; a child fills
  // every other one and exits, so no task left has them in its page tables.
  const prog = `import mmap, os, sys, time
d = sys.argv[1]
m = mmap.mmap(-1, 64 * 4096, mmap.MAP_SHARED)
pid = os.fork()
if pid == 0:
    for i in range(0, 64, 2):
        m[i * 4096:i * 4096 + 8] = b"page%04d" % i
    os._exit(0)
os.waitpid(pid, 0)
open(f"{d}/ready", "w").close()
while not os.path.exists(f"{d}/go"):
    time.sleep(0.02)
ok = all(m[i * 4096:i * 4096 + 8] == (b"page%04d" % i if i % 2 == 0 else bytes(8)) for i in range(64))
open(f"{d}/result", "w").write("ok" if ok else "wrong")
time.sleep(60)`;
  const p = startSession(["python3", "-c", prog, dir]);
  try {
    await until("child done", () => {
      try {
        Deno.statSync(`${dir}/ready`);
        return true;
      } catch {
        return false;
      }
    });
    await dumpTree(p.pid, p.status, `${dir}/images`, [p.pid]);
    await restoreTree(`${dir}/images`);
    Deno.writeTextFileSync(`${dir}/go`, "");
    await until("checked", () => readText(`${dir}/result`) !== "");
    assertEquals(readText(`${dir}/result`), "ok");
  } finally {
    await killAll([p.pid]);
    await Deno.remove(dir, { recursive: true });
  }
});
