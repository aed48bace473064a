// CRIU's RPC, end to end: a client written from the schema (tests/helpers/
// criu_rpc.ts) drives `ckpt swrk N` the way runc and go-criu do, and
// `ckpt service --address SOCK` the way libcriu's service mode does, on a
// real workload whose stdout is a pipe to the test (a container's stdio).
import {
  assert,
  assertEquals,
  assertGreater,
  assertMatch,
  assertStringIncludes,
} from "../src/deps/std_assert.ts";
import { create, isFieldSet } from "@bufbuild/protobuf";
import { criu_optsSchema, criu_versionSchema } from "../src/gen/criu/rpc_pb.ts";
import { fd as fdops, NativeError, O, wait } from "../src/native/mod.ts";
import { decodeStats } from "../src/images/criu_stats.ts";
import { openDir, RpcClient, T } from "./helpers/criu_rpc.ts";
import { ROOT } from "./helpers/ckpt.ts";
import {
  gone,
  readText,
  startSession,
  tempDir,
  threadState,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";

const dec = new TextDecoder();

/** The ticker workload as a session leader with stdout a pipe to us. */
function startTicker(mib = 8) {
  const child = new Deno.Command(`${WORKLOADS}/sessionexec`, {
    args: [`${WORKLOADS}/ticker`, String(mib)],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines: string[] = [];
  (async () => {
    let rest = "";
    for await (const chunk of child.stdout) {
      rest += dec.decode(chunk);
      const parts = rest.split("\n");
      rest = parts.pop()!;
      lines.push(...parts);
    }
  })();
  return { pid: child.pid, lines, status: child.status };
}

/** Lines written so far into pipe read end `fd` (non-blocking). */
function drain(fd: number, into: string[], rest = { s: "" }): string[] {
  const buf = new Uint8Array(65536);
  for (;;) {
    let n: number;
    try {
      n = fdops.read(fd, buf);
    } catch (err) {
      if (err instanceof NativeError && err.errno === 11) break;
      throw err;
    }
    if (n === 0) break;
    rest.s += dec.decode(buf.subarray(0, n));
    const parts = rest.s.split("\n");
    rest.s = parts.pop()!;
    into.push(...parts);
  }
  return into;
}

const sumOf = (line: string) => /sum ([0-9a-f]+)/.exec(line)?.[1];
const tickOf = (line: string) => Number(/tick (\d+)/.exec(line)?.[1]);

function tracer(pid: number): number {
  return Number(/TracerPid:\s+(\d+)/.exec(readText(`/proc/${pid}/status`))?.[1] ?? -1);
}

function kill9(pid: number) {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* gone */ }
}

Deno.test("swrk on any fd number: VERSION answers a CRIU version, then ckpt exits 0", async () => {
  for (const n of [3, 8, 11]) {
    const c = await RpcClient.swrk({ n });
    const resp = await c.call({ type: T.VERSION });
    assertEquals(resp.type, T.VERSION);
    assertEquals(resp.success, true);
    const v = resp.version!;
    assert(v.majorNumber * 10000 + v.minorNumber * 100 >= 31500, "runc wants 3.15 or newer");
    assertMatch(v.name ?? "", /^ckpt /);
    assert(
      !isFieldSet(v, criu_versionSchema.field.gitid),
      "no gitid: go-criu would count it as the next release",
    );
    assertEquals(await c.recv(), null, "ckpt closes after a request without keep_open");
    const end = await c.close();
    assertEquals(end?.code, 0, end?.stderr);
  }
});

Deno.test("swrk with keep_open: CHECK and FEATURE_CHECK answer on one connection", async () => {
  const c = await RpcClient.swrk();
  try {
    const chk = await c.call({ type: T.CHECK, keepOpen: true });
    assertEquals([chk.type, chk.success], [T.CHECK, true], chk.crErrmsg);
    const feat = await c.call({
      type: T.FEATURE_CHECK,
      keepOpen: true,
      features: { memTrack: true, lazyPages: true },
    });
    assertEquals([feat.type, feat.success], [T.FEATURE_CHECK, true]);
    // This kernel has no soft-dirty bits, but ckpt's tracking (async
    // userfaultfd write-protect + PAGEMAP_SCAN) is there: mem_track holds.
    assertEquals(feat.features?.memTrack, true);
    assertEquals(feat.features?.lazyPages, true);
    const bad = await c.call({ type: T.PAGE_SERVER, keepOpen: true });
    assertEquals(bad.success, false);
    assertStringIncludes(bad.crErrmsg, "no page server");
  } finally {
    const end = await c.close();
    assertEquals(end?.code, 1, "the last request (PAGE_SERVER) failed");
  }
});

Deno.test("DUMP with notify_scripts, then RESTORE with inherit_fd and rst_sibling", async () => {
  const dir = await tempDir("rpc");
  const images = `${dir}/images`;
  Deno.mkdirSync(images, { mode: 0o700 });
  const t = startTicker(8);
  let restored = 0;
  const [r, w] = fdops.pipe(O.NONBLOCK | O.CLOEXEC);
  try {
    await until("ticks", () => t.lines.length >= 3);
    const stdoutKey = Deno.readLinkSync(`/proc/${t.pid}/fd/1`);
    const imagesFd = openDir(images);
    const c = await RpcClient.swrk();
    const dump = await c.call({
      type: T.DUMP,
      opts: {
        imagesDirFd: imagesFd,
        pid: t.pid,
        logLevel: 4,
        logFile: "dump.log",
        notifyScripts: true,
        shellJob: false,
        leaveRunning: false,
        tcpEstablished: false,
        manageCgroups: false,
        emptyNs: 0,
      },
    }, async (n) => {
      if (n.script === "pre-dump") {
        // Nothing happens until we answer: the tree runs, nothing is written.
        await new Promise((res) => setTimeout(res, 300));
        assertEquals(tracer(t.pid), 0, "not seized before pre-dump is answered");
        assertEquals(Deno.statSync(images).isDirectory, true);
        assertEquals([...Deno.readDirSync(images)].filter((e) => e.name.endsWith(".img")), []);
      }
      if (n.script === "post-dump") {
        // Images complete, tree still there and frozen, until we answer.
        assert(Deno.statSync(`${images}/inventory.img`).isFile);
        await new Promise((res) => setTimeout(res, 200));
        assertGreater(tracer(t.pid), 0, "still held by ckpt at post-dump");
        assertEquals(gone(t.pid), false);
      }
      return true;
    });
    assertEquals(dump.success, true, dump.crErrmsg);
    assertEquals(dump.type, T.DUMP);
    assertEquals(c.notified.map((n) => n.script), ["pre-dump", "post-dump"]);
    assertEquals((await c.close())?.code, 0);
    fdops.close(imagesFd);
    await t.status;
    await until(`pid ${t.pid} free`, () => gone(t.pid));
    const before = t.lines.at(-1)!;
    assertStringIncludes(readText(`${images}/dump.log`), "DUMP request from pid");

    // CRIU's stats-dump, in CRIU's framing.
    const st = decodeStats("stats-dump", Deno.readFileSync(`${images}/stats-dump`)).dump!;
    assertGreater(Number(st.pagesWritten), 2048, "8 MiB of pattern at least");
    assertGreater(st.frozenTime, 0);
    assertGreater(Number(st.pagesScanned), Number(st.pagesWritten) - 1);

    // Restore as runc does: the container's stdout pipe is fd 1 of the swrk.
    const imagesFd2 = openDir(images);
    const c2 = await RpcClient.swrk({ extra: [[w, 1]] });
    fdops.close(w);
    const seen: string[] = [];
    const res = await c2.call({
      type: T.RESTORE,
      opts: {
        imagesDirFd: imagesFd2,
        logLevel: 4,
        logFile: "restore.log",
        notifyScripts: true,
        rstSibling: true,
        evasiveDevices: true,
        orphanPtsMaster: true,
        manageCgroups: false,
        inheritFd: [{ key: stdoutKey, fd: 1 }],
      },
    }, async (n) => {
      if (n.script === "post-restore") {
        restored = n.pid;
        // Rebuilt but not running: held by ckpt, no tick yet.
        assertEquals(tracer(n.pid), c2.child!.pid);
        await new Promise((res) => setTimeout(res, 200));
        assertEquals(
          drain(r, seen).length,
          0,
          "the tree does not run before post-restore is answered",
        );
      }
      return true;
    });
    assertEquals(res.success, true, res.crErrmsg);
    assertEquals(res.restore?.pid, t.pid);
    assertEquals(
      c2.notified,
      [
        { script: "pre-restore" },
        { script: "post-restore", pid: t.pid },
        { script: "pre-resume" },
        { script: "post-resume" },
      ],
    );
    assertEquals(restored, t.pid);
    const end = await c2.close();
    assertEquals(end?.code, 0, end?.stderr);
    fdops.close(imagesFd2);
    // rst_sibling: the restored root is the caller's child, not ckpt's.
    const stat = readText(`/proc/${t.pid}/stat`);
    assertEquals(Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]), Deno.pid);
    // It runs on, writing to the pipe it inherited, its memory intact.
    await until("ticks after restore", () => drain(r, seen).length >= 3);
    assertEquals(sumOf(seen[0]), sumOf(before));
    assertEquals(tickOf(seen[0]), tickOf(before) + 1);
    const rst = decodeStats("stats-restore", Deno.readFileSync(`${images}/stats-restore`)).restore!;
    assertGreater(Number(rst.pagesRestored), 2048);
    assertGreater(rst.restoreTime, rst.forkingTime);
  } finally {
    kill9(t.pid);
    if (restored) {
      try {
        wait(restored, 0); // our child now
      } catch { /* reaped */ }
    }
    fdops.close(r);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PRE_DUMP then DUMP with parent_img on one connection; the dump saves only what changed", async () => {
  const dir = await tempDir("rpcpre");
  const pre = `${dir}/pre`, final = `${dir}/final`;
  Deno.mkdirSync(pre, { mode: 0o700 });
  Deno.mkdirSync(final, { mode: 0o700 });
  const t = startTicker(16);
  try {
    await until("ticks", () => t.lines.length >= 2);
    const stdoutKey = Deno.readLinkSync(`/proc/${t.pid}/fd/1`);
    const preFd = openDir(pre), finalFd = openDir(final);
    const c = await RpcClient.swrk();
    const p = await c.call({
      type: T.PRE_DUMP,
      opts: { imagesDirFd: preFd, pid: t.pid, trackMem: true, logFile: "pre.log" },
    });
    assertEquals([p.type, p.success], [T.PRE_DUMP, true], p.crErrmsg);
    assertEquals(threadState(t.pid) !== "t", true, "a pre-dump leaves the tree running");
    Deno.kill(t.pid, "SIGUSR1"); // one word of every page rewritten
    const n0 = t.lines.length;
    await until("dirtied", () => t.lines.length > n0 + 2);
    const d = await c.call({
      type: T.DUMP,
      opts: {
        imagesDirFd: finalFd,
        pid: t.pid,
        trackMem: true,
        parentImg: "../pre",
        logFile: "dump.log",
      },
    });
    assertEquals([d.type, d.success], [T.DUMP, true], d.crErrmsg);
    assertEquals((await c.close())?.code, 0);
    fdops.close(preFd);
    fdops.close(finalFd);
    await t.status;
    await until(`pid ${t.pid} free`, () => gone(t.pid));
    const before = t.lines.at(-1)!;
    const pst = decodeStats("stats-dump", Deno.readFileSync(`${pre}/stats-dump`)).dump!;
    const fst = decodeStats("stats-dump", Deno.readFileSync(`${final}/stats-dump`)).dump!;
    assertGreater(Number(pst.pagesWritten), 4096, "the pre-dump saved the 16 MiB");
    // A quarter of the 4096 pages was rewritten: those are saved again, the
    // rest left in the pre-dump.
    assertGreater(Number(fst.pagesSkippedParent), 2800);
    assertGreater(1400, Number(fst.pagesWritten));
    assertGreater(Number(fst.pagesWritten), 1000);
    // It restores from the chain (no rst_sibling: ckpt's child, left to
    // run on when ckpt exits) to the memory it had after the dirtying.
    const [r, w] = fdops.pipe(O.NONBLOCK | O.CLOEXEC);
    try {
      const finalFd2 = openDir(final);
      const c2 = await RpcClient.swrk({ extra: [[w, 1]] });
      fdops.close(w);
      const res = await c2.call({
        type: T.RESTORE,
        opts: { imagesDirFd: finalFd2, inheritFd: [{ key: stdoutKey, fd: 1 }] },
      });
      assertEquals(res.success, true, res.crErrmsg);
      assertEquals((await c2.close())?.code, 0);
      fdops.close(finalFd2);
      const seen: string[] = [];
      await until("ticks after restore", () => drain(r, seen).length >= 2);
      assertEquals(sumOf(seen[0]), sumOf(before));
      assert(sumOf(before) !== sumOf(t.lines[0]), "the dirtied memory, not the pre-dumped one");
    } finally {
      fdops.close(r);
    }
  } finally {
    kill9(t.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("options ckpt cannot honour are refused by name, and nothing is done", async () => {
  const dir = await tempDir("rpcrefuse");
  const images = `${dir}/images`;
  Deno.mkdirSync(images, { mode: 0o700 });
  const t = startTicker(1);
  try {
    await until("ticks", () => t.lines.length >= 2);
    const imagesFd = openDir(images);
    const c = await RpcClient.swrk();
    const resp = await c.call({
      type: T.DUMP,
      opts: {
        imagesDirFd: imagesFd,
        pid: t.pid,
        logFile: "dump.log",
        root: "/",
        manageCgroups: true,
        cgroupYard: "/tmp/yard",
        skipMnt: ["/proc/kcore"],
        tcpEstablished: true,
        // CLONE_NEWNS: only a network namespace can be left empty.
        emptyNs: 0x20000,
      },
    });
    assertEquals([resp.type, resp.success], [T.DUMP, false]);
    assertEquals(resp.crErrno, 95);
    for (const f of ["cgroup_yard", "skip_mnt", "tcp_established", "empty_ns"]) {
      assertStringIncludes(resp.crErrmsg, f);
    }
    assertStringIncludes(resp.crErrmsg, "nothing was done");
    assertEquals((await c.close())?.code, 1);
    // The log says it too (runc points at it), and the tree never stopped.
    assertStringIncludes(readText(`${images}/dump.log`), "skip_mnt");
    assertEquals(tracer(t.pid), 0);
    const n = t.lines.length;
    await until("still ticking", () => t.lines.length > n + 2);
    assertEquals([...Deno.readDirSync(images)].filter((e) => e.name.endsWith(".img")), []);

    // A field of a newer rpc.proto than ckpt knows is refused too, by number.
    const c3 = await RpcClient.swrk();
    const opts = create(criu_optsSchema, { imagesDirFd: imagesFd, pid: t.pid });
    opts.$unknown = [{ no: 200, wireType: 0, data: new Uint8Array([1]) }];
    const newer = await c3.call({ type: T.DUMP, opts });
    assertEquals(newer.success, false);
    assertStringIncludes(newer.crErrmsg, "field number 200");
    await c3.close();

    // A caller that fails its post-dump script fails the dump: the tree is
    // let go as it was and the images are removed.
    const c2 = await RpcClient.swrk();
    const failed = await c2.call(
      { type: T.DUMP, opts: { imagesDirFd: imagesFd, pid: t.pid, notifyScripts: true } },
      (n) => n.script !== "post-dump",
    );
    assertEquals(failed.success, false);
    assertMatch(failed.crErrmsg, /post-dump action failed: the caller reported a failure/);
    await c2.close();
    const m = t.lines.length;
    await until("ticking after the failed dump", () => t.lines.length > m + 2);
    assertEquals(tracer(t.pid), 0);
    assertEquals([...Deno.readDirSync(images)].filter((e) => e.name.endsWith(".img")), []);
    fdops.close(imagesFd);
  } finally {
    kill9(t.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("service: each connection served on its own; RESTORE kept open, then WAIT_PID", async () => {
  const dir = await tempDir("rpcsvc");
  const sock = `${dir}/criu.sock`;
  const images = `${dir}/images`;
  Deno.mkdirSync(images, { mode: 0o700 });
  const svc = new Deno.Command(`${ROOT}/ckpt`, {
    args: ["service", "--address", sock],
    env: { DENO_BIN: Deno.execPath() },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const t = startSession([`${WORKLOADS}/sleeper`, `${dir}/log`, "100"]);
  try {
    await until("service socket", () => {
      try {
        return Deno.statSync(sock).isSocket === true;
      } catch {
        return false;
      }
    });
    const v = RpcClient.connect(sock);
    const ver = await v.call({ type: T.VERSION });
    assertEquals(ver.success, true);
    await v.close();

    await until("sleeping", () => readText(`${dir}/log`).length > 0);
    const imagesFd = openDir(images);
    const d = RpcClient.connect(sock);
    const dump = await d.call({ type: T.DUMP, opts: { imagesDirFd: imagesFd, pid: t.pid } });
    assertEquals(dump.success, true, dump.crErrmsg);
    await d.close();
    await t.status;
    await until(`pid ${t.pid} free`, () => gone(t.pid));

    // rst_sibling is for swrk only, as in CRIU.
    const s = RpcClient.connect(sock);
    const sib = await s.call({
      type: T.RESTORE,
      opts: { imagesDirFd: imagesFd, rstSibling: true },
    });
    assertEquals(sib.success, false);
    assertStringIncludes(sib.crErrmsg, "rst_sibling is for swrk only");
    await s.close();

    const c = RpcClient.connect(sock);
    const res = await c.call({ type: T.RESTORE, keepOpen: true, opts: { imagesDirFd: imagesFd } });
    assertEquals(res.success, true, res.crErrmsg);
    assertEquals(res.restore?.pid, t.pid);
    assertEquals(gone(t.pid), false);
    Deno.kill(t.pid, "SIGTERM");
    const w = await c.call({ type: T.WAIT_PID, pid: t.pid });
    assertEquals(w.success, true, w.crErrmsg);
    assertEquals(w.status & 0x7f, 15, "killed by SIGTERM, as WAIT_PID says");
    await c.close();
    fdops.close(imagesFd);
  } finally {
    kill9(t.pid);
    svc.kill("SIGTERM");
    await svc.output();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RESTORE with lazy_pages: answered once the tree runs, ckpt serves the rest and then exits", async () => {
  const dir = await tempDir("rpclazy");
  const images = `${dir}/images`;
  const t = startTicker(32);
  const [r, w] = fdops.pipe(O.NONBLOCK | O.CLOEXEC);
  try {
    await until("ticks", () => t.lines.length >= 2);
    const stdoutKey = Deno.readLinkSync(`/proc/${t.pid}/fd/1`);
    const d = new Deno.Command(`${ROOT}/ckpt`, {
      args: ["dump", "-t", String(t.pid), "-D", images],
      env: { DENO_BIN: Deno.execPath() },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    });
    const out = await d.output();
    assertEquals(out.code, 0, dec.decode(out.stderr));
    await t.status;
    await until(`pid ${t.pid} free`, () => gone(t.pid));
    const before = t.lines.at(-1)!;
    const fd = openDir(images);
    const c = await RpcClient.swrk({ extra: [[w, 1]] });
    fdops.close(w);
    const res = await c.call({
      type: T.RESTORE,
      opts: { imagesDirFd: fd, lazyPages: true, inheritFd: [{ key: stdoutKey, fd: 1 }] },
    });
    assertEquals(res.success, true, res.crErrmsg);
    assertEquals(res.restore?.pid, t.pid);
    const end = await c.close();
    assertEquals(end?.code, 0, end?.stderr);
    fdops.close(fd);
    const seen: string[] = [];
    await until("ticks after lazy restore", () => drain(r, seen).length >= 2);
    assertEquals(sumOf(seen[0]), sumOf(before), "every page came in");
  } finally {
    kill9(t.pid);
    fdops.close(r);
    await Deno.remove(dir, { recursive: true });
  }
});
