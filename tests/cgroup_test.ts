// Cgroups: a real tree placed in v1 cpu/memory/pids cgroups and in cgroup v2
// cgroups (a child and a thread elsewhere than the root), dumped and
// restored; checked by where each task is afterwards and by what the limits
// still refuse it. Every cgroup is made below the test's own and removed.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { CgroupsImageSchema, InventorySchema } from "../src/gen/ckpt/images_pb.ts";
import { crc32c } from "../src/images/crc32c.ts";
import { decodeImage, encodeImage, ImageKind } from "../src/images/format.ts";
import { CKPT, ROOT, runCkpt } from "./helpers/ckpt.ts";
import { openDir, RpcClient, T } from "./helpers/criu_rpc.ts";
import { criu_cg_mode } from "../src/gen/criu/rpc_pb.ts";
import { fd as fdops, wait } from "../src/native/mod.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  startSession,
  tempDir,
  until,
} from "./helpers/proc.ts";
import { fsPath, type H, ownCgroup, TestCgroups, threadCgroup } from "./helpers/cgroups.ts";
import { type TempUser, tempUser } from "./helpers/user.ts";

const CGWORK = `${ROOT}/tests/workloads/cgwork.py`;
const EAGAIN = "Resource temporarily unavailable";
const V1: H[] = ["cpu", "memory", "pids"];
const ALL: H[] = [...V1, ""];

interface Tree {
  root: number;
  thread: number;
  child: number;
  status: Promise<Deno.CommandStatus>;
}

function lines(dir: string, prefix: string): string[] {
  return readText(`${dir}/log`).split("\n").filter((l) => l.startsWith(prefix));
}

/** Sends sig and waits for the next log line starting with prefix. */
async function ask(dir: string, pid: number, sig: Deno.Signal, prefix: string): Promise<string> {
  const n = lines(dir, prefix).length;
  Deno.kill(pid, sig);
  await until(`${prefix} answer`, () => lines(dir, prefix).length > n);
  return lines(dir, prefix)[n];
}

async function startTree(dir: string, user?: TempUser): Promise<Tree> {
  const p = startSession(
    user ? user.as(["/usr/bin/python3", CGWORK, dir, "nothread"]) : ["python3", CGWORK, dir],
  );
  await until("tree started", () => lines(dir, "start").length > 0);
  const m = /root=(\d+) thread=(\d+) child=(\d+)/.exec(lines(dir, "start")[0])!;
  return { root: +m[1], thread: +m[2], child: +m[3], status: p.status };
}

/** The scenario: the root in X (v1) and X/proc (v2), its thread in cpu
 * X/thr and in the v2 threaded cgroup X/proc/thr, its child in pids X/kid
 * and v2 X/kid; cpu quota, cpu shares, a memory limit, pids.max reached
 * (the root's 2 threads and the child) and cgroup.max.descendants reached
 * (X has kid, proc and proc/thr). */
function place(cg: TestCgroups, id: string, t: Tree) {
  const x = Object.fromEntries(ALL.map((h) => [h, cg.make(h, id)])) as Record<H, string>;
  const thr = cg.make("cpu", `${id}/thr`);
  const kidPids = cg.make("pids", `${id}/kid`);
  const kidV2 = cg.make("", `${id}/kid`);
  const procV2 = cg.make("", `${id}/proc`);
  const thrV2 = cg.make("", `${id}/proc/thr`);
  cg.set("", thrV2, "cgroup.type", "threaded");
  cg.set("cpu", x.cpu, "cpu.cfs_quota_us", "50000");
  cg.set("cpu", thr, "cpu.shares", "512");
  cg.set("memory", x.memory, "memory.limit_in_bytes", String(256 << 20));
  for (const h of V1) cg.move(h, x[h], t.root);
  cg.move("", procV2, t.root);
  for (const h of ["cpu", "memory"] as H[]) cg.move(h, x[h], t.child);
  cg.move("pids", kidPids, t.child);
  cg.move("", kidV2, t.child);
  cg.move("cpu", thr, t.thread, true);
  cg.move("", thrV2, t.thread, true);
  cg.set("pids", x.pids, "pids.max", "3");
  cg.set("", x[""], "cgroup.max.descendants", "3");
  return { x, thr, kidPids, kidV2, procV2, thrV2 };
}

function checkPlaces(t: Tree, p: ReturnType<typeof place>) {
  for (const h of V1) assertEquals(ownCgroup(h, t.root), p.x[h], `root, ${h}`);
  assertEquals(ownCgroup("", t.root), p.procV2, "root, cgroup2");
  assertEquals(threadCgroup("cpu", t.root, t.thread), p.thr, "the thread's cpu cgroup");
  assertEquals(threadCgroup("", t.root, t.thread), p.thrV2, "the thread's threaded cgroup");
  assertEquals(threadCgroup("pids", t.root, t.thread), p.x.pids, "the thread's pids cgroup");
  assertEquals(ownCgroup("cpu", t.child), p.x.cpu);
  assertEquals(ownCgroup("memory", t.child), p.x.memory);
  assertEquals(ownCgroup("pids", t.child), p.kidPids);
  assertEquals(ownCgroup("", t.child), p.kidV2);
}

async function checkLimits(dir: string, t: Tree) {
  assertEquals(await ask(dir, t.root, "SIGUSR1", "fork"), `fork ${EAGAIN}`, "pids.max");
  assertEquals(await ask(dir, t.root, "SIGUSR2", "mkdir"), `mkdir ${EAGAIN}`, "max.descendants");
}

async function dumpKill(t: Tree, images: string, extra: string[] = []) {
  const r = await runCkpt(["dump", "-t", String(t.root), "-D", images, ...extra]);
  assertEquals(r.code, 0, r.stderr);
  await t.status;
  await until("tree gone", () => gone(t.root) && gone(t.child));
}

async function restore(images: string, extra: string[] = []) {
  const r = await runCkpt(["restore", "-D", images, "-d", ...extra]);
  assertEquals(r.code, 0, r.stderr);
}

async function scenario(
  name: string,
  body: (
    c: { dir: string; cg: TestCgroups; id: string; t: Tree; p: ReturnType<typeof place> },
  ) => Promise<void>,
) {
  const dir = await tempDir(`cg-${name}`);
  const cg = new TestCgroups();
  const id = `ckpt-cgt-${Deno.pid}-${name}`;
  const t = await startTree(dir);
  try {
    const p = place(cg, id, t);
    await checkLimits(dir, t); // they hold before the dump
    await body({ dir, cg, id, t, p });
  } finally {
    await killAndForget(t.root);
    await killAndForget(t.child);
    await cg.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("cgroups: each task and thread back in its v1 and v2 cgroups, limits and memory charge kept", async () => {
  await scenario("back", async ({ dir, cg, t, p }) => {
    const sum = await ask(dir, t.root, "SIGHUP", "sum");
    await dumpKill(t, `${dir}/images`);
    await restore(`${dir}/images`);
    assert(alive(t.root) && alive(t.child));
    checkPlaces(t, p);
    await checkLimits(dir, t);
    assertEquals(await ask(dir, t.root, "SIGHUP", "sum"), sum);
    // Its memory was filled once it was in its own memory cgroup.
    const usage = Number(cg.get("memory", p.x.memory, "memory.usage_in_bytes"));
    assert(usage >= 8 << 20, `memory charged to the tree's cgroup: ${usage}`);
  });
});

Deno.test("cgroups: deleted cgroups made again with their settings (soft), changed settings reset (full)", async () => {
  await scenario("made", async ({ dir, cg, id, t, p }) => {
    await dumpKill(t, `${dir}/images`);
    for (const h of ALL) await cg.remove(h, p.x[h]);
    await restore(`${dir}/images`);
    checkPlaces(t, p);
    assertEquals(cg.get("cpu", p.x.cpu, "cpu.cfs_quota_us"), "50000");
    assertEquals(cg.get("cpu", p.thr, "cpu.shares"), "512");
    assertEquals(cg.get("memory", p.x.memory, "memory.limit_in_bytes"), String(256 << 20));
    assertEquals(cg.get("pids", p.x.pids, "pids.max"), "3");
    assertEquals(cg.get("", p.x[""], "cgroup.max.descendants"), "3");
    assertEquals(cg.get("", p.thrV2, "cgroup.type"), "threaded");
    await checkLimits(dir, t);

    // Dumped again, and the settings changed meanwhile: soft leaves an
    // existing cgroup alone, full sets it again.
    await dumpKill(t, `${dir}/images2`);
    cg.set("pids", p.x.pids, "pids.max", "100");
    cg.set("cpu", p.x.cpu, "cpu.cfs_quota_us", "-1");
    await restore(`${dir}/images2`);
    assertEquals(cg.get("pids", p.x.pids, "pids.max"), "100", "soft: untouched");
    await killAndForget(t.root);
    await killAndForget(t.child);
    await restore(`${dir}/images2`, ["--manage-cgroups=full"]);
    assertEquals(cg.get("pids", p.x.pids, "pids.max"), "3", "full: set again");
    assertEquals(cg.get("cpu", p.x.cpu, "cpu.cfs_quota_us"), "50000");
    await checkLimits(dir, t);
    assertEquals(ownCgroup("pids", t.child), p.kidPids);
    void id;
  });
});

Deno.test("cgroups: --cgroup-root puts the tree's root cgroup elsewhere, the rest below it", async () => {
  await scenario("root", async ({ dir, cg, id, t }) => {
    await dumpKill(t, `${dir}/images`);
    const y = Object.fromEntries(
      ALL.map((h) => [h, cg.expect(h, `${id}-moved`)]),
    ) as Record<
      H,
      string
    >;
    cg.expect("cpu", `${id}-moved/thr`);
    cg.expect("pids", `${id}-moved/kid`);
    cg.expect("", `${id}-moved/kid`);
    await restore(`${dir}/images`, [
      ...V1.map((h) => `--cgroup-root=${h}:${y[h]}`),
      `--cgroup-root=cgroup2:${y[""]}`,
    ]);
    cg.expect("", `${id}-moved/proc/thr`);
    for (const h of V1) assertEquals(ownCgroup(h, t.root), y[h], h);
    assertEquals(ownCgroup("", t.root), `${y[""]}/proc`);
    assertEquals(threadCgroup("cpu", t.root, t.thread), `${y.cpu}/thr`);
    assertEquals(threadCgroup("", t.root, t.thread), `${y[""]}/proc/thr`);
    assertEquals(ownCgroup("pids", t.child), `${y.pids}/kid`);
    assertEquals(ownCgroup("", t.child), `${y[""]}/kid`);
    assertEquals(cg.get("pids", y.pids, "pids.max"), "3", "made with its settings");
    await checkLimits(dir, t);
  });
});

Deno.test("cgroups: strict refuses an existing cgroup, none and props a missing one, nothing started", async () => {
  await scenario("modes", async ({ dir, cg, t, p }) => {
    await dumpKill(t, `${dir}/images`);
    const strict = await runCkpt([
      "restore",
      "-D",
      `${dir}/images`,
      "-d",
      "--manage-cgroups=strict",
    ]);
    assertEquals(strict.code, 1);
    assertMatch(
      strict.stderr,
      /^ckpt: cgroup \S+ exists already \(--manage-cgroups=strict[^\n]*\n$/,
    );
    await cg.remove("pids", p.x.pids);
    for (const mode of ["none", "props"]) {
      const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d", `--manage-cgroups=${mode}`]);
      assertEquals(r.code, 1);
      assertStringIncludes(r.stderr, `cgroup ${fsPath("pids", p.x.pids)} is missing`);
    }
    assert(gone(t.root), "nothing was started");
    assert(!cg.exists("pids", p.x.pids), "and nothing made");
    // ignore: the tree stays in ckpt's own cgroups.
    await restore(`${dir}/images`, ["--manage-cgroups=ignore"]);
    assertEquals(ownCgroup("pids", t.root), ownCgroup("pids"));
    assertEquals(ownCgroup("cpu", t.child), ownCgroup("cpu"));
  });
});

/** ckpt restore started inside cgroup `jail` of the cpu hierarchy. */
async function restoreFrom(jail: string, args: string[]) {
  const cmd = new Deno.Command("sh", {
    args: ["-c", `echo $$ > ${fsPath("cpu", jail)}/cgroup.procs && exec "$@"`, "sh", CKPT, ...args],
    env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  const out = await cmd.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("cgroups: an image cannot put a task outside the restoring ckpt's cgroups unless the operator allows it", async () => {
  const dir = await tempDir("cg-guard");
  const u = await tempUser();
  const cg = new TestCgroups();
  const id = `ckpt-cgt-${Deno.pid}-guard`;
  const t = await startTree(u.dir, u);
  try {
    const x = cg.make("cpu", id);
    const jail = cg.make("cpu", `${id}-jail`);
    cg.move("cpu", x, t.root);
    cg.move("cpu", x, t.child);
    await dumpKill(t, `${dir}/images`);

    // Restored by a ckpt running in another cgroup: the task (another user)
    // could not have moved itself to x, so the image alone cannot.
    const r = await restoreFrom(jail, ["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 1, r.stderr);
    assertMatch(
      r.stderr,
      new RegExp(
        `^ckpt: pid ${t.root} \\(uid ${u.uid}\\) was in cpu cgroup ${x}, outside ckpt's own \\(${jail}\\)[^\\n]*--cgroup-root cpu:${x} to allow it\\n$`,
      ),
    );
    assert(gone(t.root), "nothing was started");
    // The operator allows it.
    const ok = await restoreFrom(jail, [
      "restore",
      "-D",
      `${dir}/images`,
      "-d",
      `--cgroup-root=cpu:${x}`,
    ]);
    assertEquals(ok.code, 0, ok.stderr);
    assertEquals(ownCgroup("cpu", t.root), x);
    assertEquals(ownCgroup("cpu", t.child), x);
    await killAndForget(t.root);
    await killAndForget(t.child);

    // A hostile image: a setting that is no setting (release_agent runs a
    // program as root; cgroup.procs would move any pid) is refused before
    // anything is made.
    for (const name of ["release_agent", "cgroup.procs", "../../x"]) {
      const images = `${dir}/images`;
      const orig = Deno.readFileSync(`${images}/cgroups.img`);
      const img = fromBinary(CgroupsImageSchema, decodeImage("cgroups.img", orig).payload);
      const h = img.hierarchies.find((h) => h.name === "cpu")!;
      h.dirs[h.dirs.length - 1].props.push({ $typeName: "ckpt.CgroupProp", name, value: "1" });
      reseal(images, "cgroups.img", ImageKind.Cgroups, toBinary(CgroupsImageSchema, img));
      const bad = await runCkpt(["restore", "-D", images, "-d"]);
      assertEquals(bad.code, 1);
      assertStringIncludes(bad.stderr, "cgroups.img:");
      assertStringIncludes(bad.stderr, JSON.stringify(name));
      assert(gone(t.root));
      reseal(images, "cgroups.img", ImageKind.Cgroups, decodeImage("cgroups.img", orig).payload);
    }
  } finally {
    await killAndForget(t.root);
    await killAndForget(t.child);
    await cg.cleanup();
    await Deno.remove(dir, { recursive: true });
    await u.remove();
  }
});

Deno.test("cgroups: cpuset cgroups made with their cpus and mems; a restore that fails after making cgroups removes them", async () => {
  const dir = await tempDir("cg-cpuset");
  const cg = new TestCgroups();
  const id = `ckpt-cgt-${Deno.pid}-cpuset`;
  const t = await startTree(dir);
  try {
    const own = ownCgroup("cpuset");
    const x = cg.make("cpuset", id);
    const cpus = cg.get("cpuset", own, "cpuset.cpus").split(/[-,]/)[0]; // one cpu of ckpt's
    cg.set("cpuset", x, "cpuset.cpus", cpus);
    cg.set("cpuset", x, "cpuset.mems", cg.get("cpuset", own, "cpuset.mems"));
    cg.move("cpuset", x, t.root);
    cg.move("cpuset", x, t.child);
    const images = `${dir}/images`;
    await dumpKill(t, images);
    await cg.remove("cpuset", x);

    // cpus taken away in the image: x is made, but no task can enter a
    // cpuset without cpus; the restore fails and x goes again.
    const orig = Deno.readFileSync(`${images}/cgroups.img`);
    const img = fromBinary(CgroupsImageSchema, decodeImage("cgroups.img", orig).payload);
    const h = img.hierarchies.find((h) => h.name === "cpuset")!;
    h.dirs.find((d) => d.path === x)!.props.find((p) => p.name === "cpuset.cpus")!.value = "";
    reseal(images, "cgroups.img", ImageKind.Cgroups, toBinary(CgroupsImageSchema, img));
    const bad = await runCkpt(["restore", "-D", images, "-d"]);
    assertEquals(bad.code, 1);
    assertMatch(
      bad.stderr,
      new RegExp(
        `^ckpt: moving pid ${t.root} into cgroup ${
          fsPath("cpuset", x)
        } failed: no space left on device \\(ENOSPC\\)\\n$`,
      ),
    );
    assert(gone(t.root), "nothing left running");
    assert(!cg.exists("cpuset", x), "the cgroup it made is gone");

    reseal(images, "cgroups.img", ImageKind.Cgroups, decodeImage("cgroups.img", orig).payload);
    await restore(images);
    assertEquals(ownCgroup("cpuset", t.root), x);
    assertEquals(ownCgroup("cpuset", t.child), x);
    assertEquals(cg.get("cpuset", x, "cpuset.cpus"), cpus);
  } finally {
    await killAndForget(t.root);
    await killAndForget(t.child);
    await cg.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cgroups through CRIU's RPC: freeze_cgroup, manage_cgroups_mode and cg_root as runc sends them", async () => {
  const dir = await tempDir("cg-rpc");
  const cg = new TestCgroups();
  const id = `ckpt-cgt-${Deno.pid}-rpc`;
  const t = await startTree(dir);
  try {
    const x = cg.make("pids", id);
    const f = cg.make("freezer", id);
    cg.move("pids", x, t.root);
    cg.move("pids", x, t.child);
    cg.move("freezer", f, t.root);
    cg.move("freezer", f, t.child);
    cg.set("pids", x, "pids.max", "3");
    const images = `${dir}/images`;
    Deno.mkdirSync(images, { mode: 0o700 });
    const imagesFd = openDir(images);
    const c = await RpcClient.swrk();
    const d = await c.call({
      type: T.DUMP,
      opts: {
        imagesDirFd: imagesFd,
        pid: t.root,
        logFile: "dump.log",
        manageCgroups: true,
        manageCgroupsMode: criu_cg_mode.SOFT,
        freezeCgroup: fsPath("freezer", f),
      },
    });
    assertEquals(d.success, true, d.crErrmsg);
    assertEquals((await c.close())?.code, 0);
    await t.status;
    await until("tree gone", () => gone(t.root) && gone(t.child));
    assertEquals(cg.get("freezer", f, "freezer.state"), "THAWED");

    // Restored into another pids cgroup (runc's cg_root: the container's new
    // one), made by the restore with the settings the dump saved.
    const y = cg.expect("pids", `${id}-new`);
    const c2 = await RpcClient.swrk();
    const r = await c2.call({
      type: T.RESTORE,
      opts: {
        imagesDirFd: imagesFd,
        logFile: "restore.log",
        manageCgroups: true,
        manageCgroupsMode: criu_cg_mode.FULL,
        cgRoot: [{ ctrl: "pids", path: y }],
        rstSibling: true, // as runc: the root is our child, moved before it runs on
      },
    });
    assertEquals(r.success, true, r.crErrmsg);
    assertEquals((await c2.close())?.code, 0);
    fdops.close(imagesFd);
    assertEquals(ownCgroup("pids", t.root), y);
    assertEquals(ownCgroup("pids", t.child), y);
    assertEquals(ownCgroup("freezer", t.root), f);
    assertEquals(cg.get("pids", y, "pids.max"), "3");
    assertEquals(await ask(dir, t.root, "SIGUSR1", "fork"), `fork ${EAGAIN}`);
    Deno.kill(t.root, "SIGKILL");
    wait(t.root, 0); // our child since the restore
  } finally {
    await killAndForget(t.root);
    await killAndForget(t.child);
    await cg.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Rewrites one image and its entry in the inventory (size, CRC32C). */
function reseal(images: string, name: string, kind: ImageKind, payload: Uint8Array) {
  const framed = encodeImage(kind, payload);
  Deno.writeFileSync(`${images}/${name}`, framed);
  const invPath = `${images}/inventory.img`;
  const inv = fromBinary(InventorySchema, decodeImage(invPath, Deno.readFileSync(invPath)).payload);
  const e = inv.files.find((f) => f.name === name)!;
  e.size = BigInt(framed.length);
  e.crc32c = crc32c(framed);
  Deno.writeFileSync(invPath, encodeImage(ImageKind.Inventory, toBinary(InventorySchema, inv)));
}

const FORKER = `
import os, sys, time
out, i = sys.argv[1], 0
while True:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    i += 1
    if i % 20 == 0:
        with open(out, "w") as f:
            f.write(str(i))
`;

/** No process is left in session sid (its leader included). */
function sessionGone(sid: number): boolean {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const st = readText(`/proc/${e.name}/stat`);
    const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
    if (Number(f[3]) === sid || Number(e.name) === sid) return false;
  }
  return true;
}

function tracer(pid: number): number {
  return Number(/TracerPid:\s+(\d+)/.exec(readText(`/proc/${pid}/status`))?.[1] ?? -1);
}

for (const h of ["freezer", ""] as H[]) {
  const kind = h === "" ? "cgroup v2" : "v1 freezer";
  Deno.test(`--freeze-cgroup (${kind}): a forking tree frozen through the freezer, thawed after a failed dump, restored`, async () => {
    const dir = await tempDir("cg-freeze");
    const cg = new TestCgroups();
    const f = cg.make(h, `ckpt-cgt-${Deno.pid}-freeze${h ? "" : "2"}`);
    const fdir = fsPath(h, f);
    const out = `${dir}/forks`;
    const p = startSession(["python3", "-c", FORKER, out]);
    const state = () => h === "" ? cg.get(h, f, "cgroup.freeze") : cg.get(h, f, "freezer.state");
    const thawed = h === "" ? "0" : "THAWED";
    const moves = async () => {
      const n = readText(out);
      await until("forker runs on", () => readText(out) !== n);
    };
    try {
      await until("forker runs", () => readText(out).length > 0);
      cg.move(h, f, p.pid);
      // A dump refused once the tree is frozen leaves the cgroup thawed and
      // the tree running, untraced.
      const bad = await runCkpt([
        "dump",
        "-t",
        String(p.pid),
        "-D",
        `${dir}/bad`,
        `--freeze-cgroup=${fdir}`,
        "--cgroup-dump-controller=nosuch",
      ]);
      assertEquals(bad.code, 1);
      assertStringIncludes(bad.stderr, "--cgroup-dump-controller nosuch: no such cgroup hierarchy");
      assertEquals(state(), thawed);
      assertEquals(tracer(p.pid), 0);
      await moves();

      // Frozen by someone else: a plain dump says so (ptrace could never stop
      // it); --freeze-cgroup dumps it and leaves it frozen again.
      cg.set(h, f, h === "" ? "cgroup.freeze" : "freezer.state", h === "" ? "1" : "FROZEN");
      await until(
        "frozen",
        () => h === "" ? /frozen 1/.test(cg.get(h, f, "cgroup.events")) : state() === "FROZEN",
      );
      const plain = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/plain`]);
      assertEquals(plain.code, 1);
      assertStringIncludes(plain.stderr, `is frozen by the cgroup freezer (${fdir})`);
      const held = await runCkpt([
        "dump",
        "-t",
        String(p.pid),
        "-D",
        `${dir}/held`,
        "-R",
        `--freeze-cgroup=${fdir}`,
      ]);
      assertEquals(held.code, 0, held.stderr);
      assertEquals(state(), h === "" ? "1" : "FROZEN", "frozen again, as it was");
      if (h === "") assertMatch(cg.get(h, f, "cgroup.events"), /frozen 1/);
      cg.set(h, f, h === "" ? "cgroup.freeze" : "freezer.state", thawed);
      await moves();

      // And the dump proper: the forking tree is caught whole, and comes back
      // in its cgroup.
      const r = await runCkpt([
        "dump",
        "-t",
        String(p.pid),
        "-D",
        `${dir}/images`,
        `--freeze-cgroup=${fdir}`,
      ]);
      assertEquals(r.code, 0, r.stderr);
      await p.status;
      // Its children that had exited unreaped (caught whole) are reaped by
      // init now, lazily: their pids, and the root's as their session, are
      // free only then.
      await until("tree gone", () => sessionGone(p.pid), 20_000);
      const res = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
      assertEquals(res.code, 0, res.stderr);
      assertEquals(ownCgroup(h, p.pid), f);
      await moves();
    } finally {
      await killAndForget(p.pid);
      await cg.cleanup();
      await Deno.remove(dir, { recursive: true });
    }
  });
}
