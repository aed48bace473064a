// inotify and fanotify restored exactly: inotify watches with their very wd
// numbers (a removed one and 100 burnt ones in between), masks and inodes,
// fanotify groups with their flags and inode, mount, ignore and filesystem
// marks — checked by the events the restored program then reads, and by
// fdinfo. What cannot be given back (unread events, a watch on a deleted
// file, permission events) refuses the dump, and the program runs on.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
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

/** The fds of pid whose link is `link`, in order. */
function fdsOf(pid: number, link: string): number[] {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) => Number(e.name))
    .filter((n) => Deno.readLinkSync(`/proc/${pid}/fd/${n}`) === link)
    .sort((a, b) => a - b);
}

/** fdinfo of one fd: its status flags and its watches or marks, sorted. */
function notifyInfo(pid: number, fd: number): string[] {
  return Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`).split("\n")
    .filter((l) => l.startsWith("flags:") || /^(in|fan)otify /.test(l)).sort();
}

/** Log lines after "ready" that start with one of the prefixes. */
function eventsIn(log: string, prefixes: string[]): string[] {
  const text = readText(log);
  return text.slice(text.indexOf("ready\n") + 6).split("\n")
    .filter((l) => prefixes.some((p) => l.startsWith(p)));
}

async function dumpAndRestore(p: Started, dir: string): Promise<void> {
  const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
  assertEquals(d.code, 0, `dump failed: ${d.stderr}`);
  await p.status;
  await until(`pid ${p.pid} free`, () => gone(p.pid));
  const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
  assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
}

/** A dump that must be refused with `why`, the program left running. */
async function refused(p: Started, dir: string, why: RegExp): Promise<void> {
  const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
  assertEquals(d.code, 1, `dump should be refused: ${d.stderr}`);
  assertMatch(d.stderr, why);
  assert(alive(p.pid), "the program runs on");
  await until("not stopped", () => threadState(p.pid) !== "t");
  const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
  assertEquals(r.code, 1, "nothing restorable was left");
}

async function inotifier(dir: string, mode?: string): Promise<Started> {
  for (const d of ["a", "c", "e", "f"]) Deno.mkdirSync(`${dir}/w/${d}`, { recursive: true });
  for (const f of ["b", "d", "held"]) Deno.writeTextFileSync(`${dir}/w/${f}`, "");
  const p = startSession([`${WORKLOADS}/inotifier`, dir, ...(mode ? [mode] : [])]);
  await until("watches set", () => readText(`${dir}/log`).includes("ready"));
  return p;
}

Deno.test("inotify: every watch comes back with its wd, mask and inode; events after restore, none from ckpt's own work", async () => {
  const dir = await tempDir("inotify");
  const log = `${dir}/log`, w = `${dir}/w`;
  let pid = 0;
  try {
    const p = await inotifier(dir);
    pid = p.pid;
    assertStringIncludes(readText(log), "wds 1 3 5 6 107 ignored 102");
    const [fd] = fdsOf(pid, "anon_inode:inotify");
    const before = notifyInfo(pid, fd);
    assertEquals(before.filter((l) => l.startsWith("inotify")).length, 5);
    await dumpAndRestore(p, dir);
    assertEquals(notifyInfo(pid, fd), before, "same wds, masks, inodes and flags");
    Deno.writeTextFileSync(`${w}/b`, "more\n", { append: true });
    Deno.mkdirSync(`${w}/f/sub`);
    Deno.writeTextFileSync(`${w}/e/new1`, "");
    Deno.chmodSync(`${w}/d`, 0o600);
    const expected = [
      "ev wd=1 mask=20 name=b",
      "ev wd=1 mask=2 name=b",
      "ev wd=1 mask=8 name=b",
      "ev wd=3 mask=2 name=",
      "ev wd=3 mask=8 name=",
      "ev wd=107 mask=40000100 name=sub",
      "ev wd=6 mask=100 name=new1",
      "ev wd=1 mask=4 name=d",
      "ev wd=5 mask=4 name=",
      "ev wd=5 mask=8000 name=", // the one-shot watch is gone after its event
    ].sort();
    const seen = () => [...new Set(eventsIn(log, ["ev ", "read failed"]))].sort();
    await until("every event read", () => expected.every((e) => seen().includes(e)));
    await new Promise((r) => setTimeout(r, 200)); // stragglers would show here
    // Nothing else: no IN_IGNORED of the burnt wds, no open or close of the
    // cwd (w) or of w/held by ckpt while restoring.
    assertEquals(seen(), expected);
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("inotify: unread events refuse the dump, and so does a watch on a deleted file; the program runs on", async () => {
  const dir = await tempDir("inotify-refused");
  const other = await tempDir("inotify-held");
  const pids: number[] = [];
  try {
    const p = await inotifier(dir, "noread");
    pids.push(p.pid);
    Deno.writeTextFileSync(`${dir}/w/b`, "unread\n", { append: true });
    await refused(
      p,
      dir,
      /^ckpt: fd \d+ of pid \d+ \(anon_inode:inotify\): \d+ bytes of events are queued and not read yet/,
    );

    const q = await inotifier(other, "watchheld");
    pids.push(q.pid);
    Deno.removeSync(`${other}/w/held`); // still open, so still watched
    await until("unlink read", () => readText(`${other}/log`).includes("name=held"));
    await refused(
      q,
      other,
      /watch wd 108 is on inode \d+ on device \d+:\d+, and no path leads to it/,
    );
    // It still gets its events.
    Deno.mkdirSync(`${other}/w/f/late`);
    await until("event after the refusal", () => readText(`${other}/log`).includes("name=late"));
  } finally {
    for (const pid of pids) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(other, { recursive: true });
  }
});

/** A tmpfs of the test's own, so that no other activity reaches its marks. */
async function withMount(dir: string, fn: (mnt: string) => Promise<void>): Promise<void> {
  const mnt = `${dir}/mnt`;
  Deno.mkdirSync(mnt);
  const m = await new Deno.Command("mount", { args: ["-t", "tmpfs", "ckpt-test", mnt] }).output();
  assertEquals(m.code, 0, `mount: ${new TextDecoder().decode(m.stderr)}`);
  try {
    for (const f of ["f", "ign", "g"]) Deno.writeTextFileSync(`${mnt}/${f}`, "data\n");
    await fn(mnt);
  } finally {
    await new Deno.Command("umount", { args: ["-l", mnt] }).output();
  }
}

Deno.test("fanotify: group flags, inode, mount, ignore and filesystem marks come back; events after restore", async () => {
  const dir = await tempDir("fanotify");
  const log = `${dir}/log`;
  let pid = 0;
  try {
    await withMount(dir, async (mnt) => {
      const p = startSession([`${WORKLOADS}/fanotifier`, dir, mnt]);
      pid = p.pid;
      await until("marks set", () => readText(log).includes("ready"));
      const fds = fdsOf(pid, "anon_inode:[fanotify]");
      assertEquals(fds.length, 2);
      const before = fds.map((n) => notifyInfo(pid, n));
      assertEquals(before[0].filter((l) => l.startsWith("fanotify")).length, 4);
      await dumpAndRestore(p, dir);
      assertEquals(fds.map((n) => notifyInfo(pid, n)), before, "same flags and marks");
      Deno.readTextFileSync(`${mnt}/g`);
      Deno.readTextFileSync(`${mnt}/ign`);
      Deno.writeTextFileSync(`${mnt}/f`, "more\n", { append: true });
      Deno.mkdirSync(`${mnt}/newdir`);
      const masks = () => {
        const byPath = new Map<string, number>();
        for (const l of eventsIn(log, ["ev ", "fid "])) {
          const m = /^(ev|fid) mask=([0-9a-f]+)(?: path=(.*))?$/.exec(l);
          const key = m?.[1] === "fid" ? "fid" : m?.[3] ?? l;
          byPath.set(key, (byPath.get(key) ?? 0) | parseInt(m?.[2] ?? "0", 16));
        }
        return byPath;
      };
      const want = new Map([
        [`${mnt}/g`, 0x20], // FAN_OPEN through the mount mark
        [`${mnt}/f`, 0x2a], // and FAN_MODIFY, FAN_CLOSE_WRITE through the inode mark
        ["fid", 0x40000100], // FAN_CREATE | FAN_ONDIR through the filesystem mark
      ]);
      await until("every event read", () => [...want].every(([k, v]) => masks().get(k) === v));
      await new Promise((r) => setTimeout(r, 200));
      // Nothing for ign (its ignore mask) nor anything else.
      assertEquals(masks(), want);
    });
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fanotify: unread events and permission events refuse the dump; the program runs on", async () => {
  const dir = await tempDir("fanotify-refused");
  const pids: number[] = [];
  try {
    await withMount(dir, async (mnt) => {
      const log = `${dir}/log`;
      const p = startSession([`${WORKLOADS}/fanotifier`, dir, mnt, "noread"]);
      pids.push(p.pid);
      await until("marks set", () => readText(log).includes("ready"));
      Deno.readTextFileSync(`${mnt}/g`);
      await refused(
        p,
        dir,
        /^ckpt: fd \d+ of pid \d+ \(anon_inode:\[fanotify\]\): \d+ bytes of events are queued/,
      );
      await killAndForget(p.pid);

      Deno.removeSync(log);
      const q = startSession([`${WORKLOADS}/fanotifier`, dir, mnt, "perm"]);
      pids.push(q.pid);
      await until("marks set", () => readText(log).includes("ready"));
      await refused(q, dir, /\(anon_inode:\[fanotify\]\): the group takes permission events/);
      // Still the listener: an open waits for its answer, and gets it.
      Deno.readTextFileSync(`${mnt}/g`);
      await until("answered", () => readText(log).includes("perm mask=10000"));
    });
  } finally {
    for (const pid of pids) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});
