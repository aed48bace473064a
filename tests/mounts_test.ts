// Mount namespaces: the mount tree model on the mount table of a real runc
// container (what is the root, made anew, a bind, external, refused), and
// containers made like runc makes them (tests/workloads/mntlaunch.c: a
// busybox shell counting in memory in new PID, mount, UTS and IPC
// namespaces, with proc, sysfs, devpts, mqueue, tmpfs mounts with files,
// binds inside the tree and a host directory bound in) dumped and restored
// into new namespaces: the count goes on from where it was, with its mounts,
// their flags and its tmpfs files; what cannot be restored is refused.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { MountHow } from "../src/gen/ckpt/images_pb.ts";
import { classifyMounts } from "../src/mount/model.ts";
import { MS, parseMountInfo } from "../src/mount/mountinfo.ts";
import { restoreOrder } from "../src/mount/restore.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { ensureProgram } from "./helpers/packages.ts";
import {
  gone,
  readText,
  type Started,
  startSession,
  tempDir,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";

// /proc/PID/mountinfo of `runc run` of the default `runc spec` here (cgroup
// v1), a tmpfs /tmp and a host directory bound at /data added.
const RUNC = `65 43 254:0 /tmp/b/rootfs / ro,relatime - ext4 /dev/vda rw,discard
66 65 0:40 / /proc rw,relatime - proc proc rw
67 65 0:41 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
68 67 0:42 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
69 67 0:43 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
70 67 0:39 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
71 65 0:44 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
72 71 0:45 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
73 72 0:29 /probe /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
78 72 0:34 /probe /sys/fs/cgroup/freezer ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,freezer
82 65 0:46 / /tmp rw,nosuid,relatime - tmpfs tmpfs rw,size=1024k
83 65 254:0 /tmp/b/hostdata /data rw,relatime - ext4 /dev/vda rw,discard
44 66 0:40 /bus /proc/bus ro,relatime - proc proc rw
47 66 0:40 /sys /proc/sys ro,relatime - proc proc rw
48 66 0:47 / /proc/acpi ro,relatime - tmpfs tmpfs ro
49 66 0:41 /null /proc/keys rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
51 71 0:48 / /sys/firmware ro,relatime - tmpfs tmpfs ro`;

/** runc's ext_mnt keys of a DUMP (mountpoint → key): its binds, the cgroup
 * binds, masked files (onto /dev/null) and device nodes. */
const RUNC_EXT = new Map([
  ["/data", "/data"],
  ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu"],
  ["/sys/fs/cgroup/freezer", "/sys/fs/cgroup/freezer"],
  ["/proc/keys", "/dev/null"],
  ["/dev/null", "/dev/null"],
]);

const HOST = { hostDevs: new Set(["254:0", "0:29", "0:34"]), ownCgroupNs: false };

Deno.test("mountinfo: flags, propagation, filesystem options and escapes", () => {
  const [m] = parseMountInfo(
    "36 35 98:0 /mnt\\040x /mnt2 rw,noatime,nodev master:1 shared:7 - ext3 /dev/root rw,errors=continue",
  );
  assertEquals(m.root, "/mnt x");
  assertEquals(m.flags, MS.NOATIME | MS.NODEV);
  assertEquals([m.shared, m.master], [7, 1]);
  assertEquals([m.fstype, m.source, m.options, m.sbReadonly], [
    "ext3",
    "/dev/root",
    "errors=continue",
    false,
  ]);
  const [t] = parseMountInfo("67 65 0:41 / /dev rw,nosuid - tmpfs tmpfs ro,size=65536k");
  assertEquals(t.flags, MS.NOSUID | MS.STRICTATIME, "no atime word: strictatime");
  assert(t.sbReadonly);
});

Deno.test("mount tree of a runc container: root, made anew, binds inside, external", () => {
  const tree = classifyMounts(parseMountInfo(RUNC), { external: RUNC_EXT, ...HOST });
  assertEquals(tree.problems, []);
  const how = Object.fromEntries(tree.mounts.map((m) => [m.mountpoint, MountHow[m.how]]));
  assertEquals(how, {
    "/": "MOUNT_ROOT",
    "/proc": "MOUNT_FRESH",
    "/proc/bus": "MOUNT_BIND",
    "/proc/sys": "MOUNT_BIND",
    "/proc/acpi": "MOUNT_FRESH",
    "/proc/keys": "MOUNT_EXTERNAL",
    "/dev": "MOUNT_FRESH",
    "/dev/pts": "MOUNT_FRESH",
    "/dev/shm": "MOUNT_FRESH",
    "/dev/mqueue": "MOUNT_FRESH",
    "/sys": "MOUNT_FRESH",
    "/sys/fs/cgroup": "MOUNT_FRESH",
    "/sys/fs/cgroup/cpu": "MOUNT_EXTERNAL",
    "/sys/fs/cgroup/freezer": "MOUNT_EXTERNAL",
    "/sys/firmware": "MOUNT_FRESH",
    "/tmp": "MOUNT_FRESH",
    "/data": "MOUNT_EXTERNAL",
  });
  assertEquals(tree.mounts[0].mountpoint, "/", "the root first");
  const sys = tree.mounts.find((m) => m.mountpoint === "/proc/sys")!;
  assertEquals([sys.bindOf, sys.bindPath], [66, "sys"]);
  assertEquals(tree.mounts.find((m) => m.mountpoint === "/proc/keys")!.externalKey, "/dev/null");
  // Parents before children.
  const seen = new Set<number>();
  for (const m of tree.mounts) {
    assert(m.parentId === 0 || seen.has(m.parentId), `${m.mountpoint} after its parent`);
    seen.add(m.id);
  }
});

Deno.test("mount tree: a host bind without --external, and shared mounts, are refused by name", () => {
  const ext = new Map(RUNC_EXT);
  ext.delete("/data");
  ext.delete("/proc/keys");
  const text = RUNC.replace(
    "82 65 0:46 / /tmp rw,nosuid,relatime -",
    "82 65 0:46 / /tmp rw,nosuid,relatime shared:5 -",
  );
  const tree = classifyMounts(parseMountInfo(text), { external: ext, ...HOST });
  assertEquals(tree.problems.length, 2, tree.problems.join("\n"));
  assertStringIncludes(tree.problems[0], "/data (ext4 /dev/vda, /tmp/b/hostdata)");
  assertStringIncludes(tree.problems[0], "--external mnt[/data]:KEY");
  assertStringIncludes(tree.problems[1], "/tmp");
  assertStringIncludes(tree.problems[1], "peer group 5");
  // /proc/keys shows /null of the container's own /dev: a bind inside.
  const keys = tree.mounts.find((m) => m.mountpoint === "/proc/keys")!;
  assertEquals([MountHow[keys.how], keys.bindOf, keys.bindPath], ["MOUNT_BIND", 67, "null"]);
  // A tmpfs the host mounts too was bound from it.
  const shared = classifyMounts(parseMountInfo(RUNC), {
    external: RUNC_EXT,
    hostDevs: new Set([...HOST.hostDevs, "0:46"]),
    ownCgroupNs: false,
  });
  assertStringIncludes(shared.problems.join("\n"), "ckpt's own mount namespace shows this");
});

Deno.test("restore order: a bind comes after the mount it shows part of", () => {
  const ext = new Map(RUNC_EXT);
  ext.delete("/proc/keys");
  const tree = classifyMounts(parseMountInfo(RUNC), { external: ext, ...HOST });
  const order = restoreOrder(tree.mounts).map((m) => m.mountpoint);
  assert(order.indexOf("/proc/keys") > order.indexOf("/dev"), order.join(" "));
  assert(order.indexOf("/proc/sys") > order.indexOf("/proc"));
  assertEquals(order[0], "/");
});

// ---- containers --------------------------------------------------------------

const APPLETS = ["sh", "cat", "mv", "mkdir", "ln", "chmod", "sleep", "hostname"];

const SCRIPT = [
  "PATH=/bin",
  "i=0",
  "echo hello > /tmp/a",
  "mkdir /tmp/d",
  "ln -s ../a /tmp/d/link",
  "echo secret > /dev/shm/s",
  "chmod 600 /dev/shm/s",
  "while true; do",
  '  i=$((i+1)); echo "$i $(cat /proc/sys/kernel/hostname)" > /data/count.new',
  "  mv /data/count.new /data/count; sleep 0.05",
  "done",
].join("\n");

interface Box {
  dir: string;
  rootfs: string;
  host: string;
  launcher: Started;
  init: number;
}

async function busybox(): Promise<string> {
  return await ensureProgram("busybox", "busybox-static");
}

/** The libraries a dynamically linked program needs (ldd), at their paths:
 * the busybox installed may be either Debian's static or dynamic one (other
 * tests install the latter, which removes the former). */
async function librariesOf(path: string): Promise<string[]> {
  const out = await new Deno.Command("ldd", { args: [path], stdout: "piped", stderr: "null" })
    .output();
  return [...new TextDecoder().decode(out.stdout).matchAll(/(\/\S+) \(0x/g)].map((m) => m[1]);
}

async function copyInto(rootfs: string, path: string): Promise<void> {
  await Deno.mkdir(`${rootfs}${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
  await Deno.copyFile(path, `${rootfs}${path}`);
}

async function startBox(prefix: string): Promise<Box> {
  const dir = await tempDir(prefix);
  const rootfs = `${dir}/rootfs`, host = `${dir}/host`;
  await Deno.mkdir(`${rootfs}/bin`, { recursive: true });
  await Deno.mkdir(host);
  const bb = await busybox();
  await Deno.copyFile(bb, `${rootfs}/bin/busybox`);
  for (const lib of await librariesOf(bb)) await copyInto(rootfs, lib);
  await Deno.chmod(`${rootfs}/bin/busybox`, 0o755);
  for (const a of APPLETS) await Deno.symlink("busybox", `${rootfs}/bin/${a}`);
  const launcher = startSession([`${WORKLOADS}/mntlaunch`, rootfs, host, "/bin/sh", "-c", SCRIPT]);
  let init = 0;
  await until("the container's init", () => {
    init = Number(readText(`/proc/${launcher.pid}/task/${launcher.pid}/children`).trim() || 0);
    return init > 0;
  });
  await until("the container counting", () => count(host) > 0);
  return { dir, rootfs, host, launcher, init };
}

function count(host: string): number {
  try {
    return Number(Deno.readTextFileSync(`${host}/count`).split(" ")[0]);
  } catch {
    return 0;
  }
}

/** The mount table as the task sees it, without what the kernel numbers
 * anew (mount ids, anonymous device numbers). */
function mountShape(pid: number): string[] {
  return readText(`/proc/${pid}/mountinfo`).trim().split("\n").map((l) => {
    const c = l.split(" ");
    return [c[3], c[4], c[5], ...c.slice(c.indexOf("-"))].join(" ");
  }).sort();
}

function nsPid(pid: number): number[] {
  const m = /^NSpid:\s+(.*)$/m.exec(readText(`/proc/${pid}/status`));
  return m ? m[1].trim().split(/\s+/).map(Number) : [];
}

async function stop(pid: number) {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* gone */ }
  await until(`pid ${pid} gone`, () => gone(pid));
}

async function cleanup(box: Box, restored?: number) {
  if (restored) await stop(restored);
  await stop(box.init);
  await box.launcher.status;
  await Deno.remove(box.dir, { recursive: true });
}

const EXT_DUMP = ["--external", "mnt[/data]:data"];
const extRestore = (b: Box) => ["--root", b.rootfs, "--external", `mnt[data]:${b.host}`];

Deno.test("a container with its mounts, tmpfs files and host name comes back counting on", async () => {
  const box = await startBox("mnt");
  let restored = 0;
  try {
    const shape = mountShape(box.init);
    const img = `${box.dir}/img`;
    const d = await runCkpt(["dump", "-t", String(box.init), "-D", img, ...EXT_DUMP]);
    assertEquals(d.code, 0, d.stderr);
    await box.launcher.status;
    await until("the dumped init gone", () => gone(box.init));
    const atDump = count(box.host);
    const r = await runCkpt(["restore", "-D", img, "-d", ...extRestore(box)]);
    assertEquals(r.code, 0, r.stderr);
    restored = box.init;
    assertEquals(nsPid(box.init), [box.init, 1], "pid 1 of its PID namespace again");
    await until("counting again", () => count(box.host) > atDump);
    const first = count(box.host);
    assert(first <= atDump + 3, `went on from ${atDump} (at ${first}), not from the start`);
    assertEquals(Deno.readTextFileSync(`${box.host}/count`).trim().split(" ")[1], "ckpt-box");
    assertEquals(mountShape(box.init), shape, "the same mounts, options and flags");
    const root = `/proc/${box.init}/root`;
    assertEquals(readText(`${root}/tmp/a`), "hello\n");
    assertEquals(Deno.readLinkSync(`${root}/tmp/d/link`), "../a");
    assertEquals(readText(`${root}/tmp/d/link`), "hello\n");
    const s = Deno.lstatSync(`${root}/dev/shm/s`);
    assertEquals([s.mode! & 0o7777, readText(`${root}/dev/shm/s`)], [0o600, "secret\n"]);
    assertEquals(readText(`${root}/dev/note`), "made by mntlaunch\n");
    assertEquals(Deno.lstatSync(`${root}/dev/note`).mode! & 0o7777, 0o640);
    for (const dev of ["dev/null", "proc/keys"]) {
      const st = Deno.statSync(`${root}/${dev}`);
      assert(st.isCharDevice, dev);
      assertEquals([st.rdev, st.mode! & 0o777], [0x103, 0o666], dev);
    }
    assertEquals(Deno.readLinkSync(`${root}/dev/fd`), "/proc/self/fd");
    // Its own /proc: its PID namespace's.
    assertMatch(readText(`${root}/proc/1/comm`), /^sh/);
  } finally {
    await cleanup(box, restored);
  }
});

Deno.test("a container dumped with --leave-running comes back from the checkpoint, not from later", async () => {
  const box = await startBox("mntr");
  let restored = 0;
  try {
    const img = `${box.dir}/img`;
    // The checkpoint is taken between these two counts (with -R the tree
    // runs on while the pages are written, so it may count on before the
    // dump returns).
    const before = count(box.host);
    const d = await runCkpt(["dump", "-R", "-t", String(box.init), "-D", img, ...EXT_DUMP]);
    assertEquals(d.code, 0, d.stderr);
    const atDump = count(box.host);
    await until("the original counting on", () => count(box.host) > atDump + 10);
    await stop(box.init);
    await box.launcher.status;
    const later = count(box.host);
    const r = await runCkpt(["restore", "-D", img, "-d", ...extRestore(box)]);
    assertEquals(r.code, 0, r.stderr);
    restored = box.init;
    await until("the restored one counting", () => count(box.host) !== later);
    const first = count(box.host);
    assert(
      first > before && first <= atDump + 1 && first < later,
      `${first}: from between ${before} and ${atDump}, not ${later}`,
    );
  } finally {
    await cleanup(box, restored);
  }
});

Deno.test("a host mount not named --external is refused at dump, and restore says what it lacks", async () => {
  const box = await startBox("mntx");
  let restored = 0;
  try {
    const img = `${box.dir}/img`;
    const d = await runCkpt(["dump", "-t", String(box.init), "-D", img]);
    assertEquals(d.code, 1);
    assertStringIncludes(d.stderr, "at /data (ext4");
    assertStringIncludes(d.stderr, "--external mnt[/data]:KEY");
    const n = count(box.host);
    await until("still counting", () => count(box.host) > n);
    const ok = await runCkpt(["dump", "-t", String(box.init), "-D", img, ...EXT_DUMP]);
    assertEquals(ok.code, 0, ok.stderr);
    await box.launcher.status;
    await until("the dumped init gone", () => gone(box.init));
    const noRoot = await runCkpt(["restore", "-D", img, "-d"]);
    assertEquals(noRoot.code, 1);
    assertStringIncludes(noRoot.stderr, "--root DIR");
    const noExt = await runCkpt(["restore", "-D", img, "-d", "--root", box.rootfs]);
    assertEquals(noExt.code, 1);
    assertStringIncludes(noExt.stderr, "--external mnt[data]:PATH (for /data)");
    assert(gone(box.init), "nothing was started");
    const r = await runCkpt(["restore", "-D", img, "-d", ...extRestore(box)]);
    assertEquals(r.code, 0, r.stderr);
    restored = box.init;
    const c = count(box.host);
    await until("counting", () => count(box.host) > c);
  } finally {
    await cleanup(box, restored);
  }
});
