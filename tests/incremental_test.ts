// Pre-dump and incremental dump (--prev-images-dir) of real processes whose
// memory changes in between: written by the program and by the kernel,
// discarded with MADV_DONTNEED, tracking lost, a fork since the pre-dump.
import { assert, assertEquals, assertMatch } from "@std/assert";
import { ROOT, runCkpt } from "./helpers/ckpt.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  startSession,
  tempDir,
  until,
} from "./helpers/proc.ts";

const DIRTIER = `${ROOT}/tests/workloads/dirtier.py`;
const MIB = 64;

function lines(dir: string): string[] {
  return readText(`${dir}/log`).trim().split("\n").filter(Boolean);
}

/** Sends sig and waits for the log line it causes (matching re). */
async function poke(dir: string, pid: number, sig: Deno.Signal, re: RegExp): Promise<string> {
  const before = lines(dir).length;
  Deno.kill(pid, sig);
  let hit = "";
  await until(`${sig} to pid ${pid}`, () => {
    hit = lines(dir).slice(before).find((l) => re.test(l)) ?? "";
    return hit !== "";
  });
  return hit;
}

async function checksum(dir: string, pid: number): Promise<string> {
  const l = await poke(dir, pid, "SIGHUP", new RegExp(`^sum pid=${pid} `));
  return l.split(" ").at(-1)!;
}

function hasUffd(pid: number): boolean {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].some((e) => {
    try {
      return Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`) === "anon_inode:[userfaultfd]";
    } catch {
      return false;
    }
  });
}

/** Bytes in the task's pages files (one per copying thread when large). */
function pagesSize(images: string, pid: number): number {
  return [...Deno.readDirSync(images)].filter((e) => e.name.startsWith(`pages-${pid}.`))
    .reduce((a, e) => a + Deno.statSync(`${images}/${e.name}`).size, 0);
}

async function start(dir: string): Promise<number> {
  const p = startSession(["python3", DIRTIER, dir, String(MIB)]);
  await until("dirtier ready", () => lines(dir).some((l) => l.startsWith("ready")), 20_000);
  return p.pid;
}

async function ok(args: string[]): Promise<string> {
  const r = await runCkpt(args);
  assertEquals(r.code, 0, `ckpt ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

Deno.test("pre-dump, pre-dump again, incremental dump: only written pages saved, memory exact after restore", async () => {
  const dir = await tempDir("incr");
  const pid = await start(dir);
  try {
    await ok(["pre-dump", "-t", String(pid), "-D", `${dir}/pre1`]);
    assert(alive(pid), "pre-dump leaves the tree running");
    assert(hasUffd(pid), "the tracking userfaultfd stays in the task");
    assert(pagesSize(`${dir}/pre1`, pid) >= MIB << 20, "the first pre-dump holds everything");

    await poke(dir, pid, "SIGUSR1", /^wrote .* gen=1$/);
    const out2 = await ok([
      "pre-dump",
      "-t",
      String(pid),
      "-D",
      `${dir}/pre2`,
      "--prev-images-dir",
      "../pre1",
    ]);
    assertMatch(out2, /unchanged, left in the parent/);
    const second = pagesSize(`${dir}/pre2`, pid);
    assert(second < (MIB << 20) / 2, `second pre-dump saves written pages only (${second} bytes)`);
    assert(second > (MIB << 20) / 8, `every 7th page was written (${second} bytes)`);

    await poke(dir, pid, "SIGUSR1", /^wrote .* gen=2$/);
    await poke(dir, pid, "SIGUSR2", /^discarded/);
    const want = await checksum(dir, pid);
    await ok(["dump", "-t", String(pid), "-D", `${dir}/final`, "--prev-images-dir", "../pre2"]);
    const last = pagesSize(`${dir}/final`, pid);
    assert(last < (MIB << 20) / 2, `the dump saves written pages only (${last} bytes)`);
    const shown = JSON.parse(await ok(["show", `${dir}/final`]));
    assert(shown.tasks[0].in_parent_pages > 0, "show counts the pages left in the parent");
    await until("dumped pid gone", () => gone(pid));

    const r = await runCkpt(["restore", "-D", `${dir}/final`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assert(alive(pid), "restored");
    assert(!hasUffd(pid), "the tracking fd is not restored");
    assertEquals(await checksum(dir, pid), want, "memory equals the memory at dump");
    await poke(dir, pid, "SIGUSR1", /^wrote .* gen=3$/);
    assert((await checksum(dir, pid)) !== want, "and the program goes on changing it");
  } finally {
    await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a task that closed its tracking fd, and a child forked since the pre-dump, are saved whole", async () => {
  const dir = await tempDir("incr-lost");
  const pid = await start(dir);
  let child = 0;
  try {
    await ok(["pre-dump", "-t", String(pid), "-D", `${dir}/pre`]);
    const forked = await poke(dir, pid, "SIGURG", /^forked /);
    child = Number(/child=(\d+)/.exec(forked)![1]);
    assert(hasUffd(child), "the child inherited the tracking fd");
    await poke(dir, pid, "SIGWINCH", /^closed /);
    assert(!hasUffd(pid), "the parent closed it");
    await poke(dir, pid, "SIGUSR1", /^wrote .* gen=1$/);
    const want = await checksum(dir, pid);
    const wantChild = await checksum(dir, child);
    await ok(["dump", "-t", String(pid), "-D", `${dir}/final`, "--prev-images-dir", `${dir}/pre`]);
    assert(pagesSize(`${dir}/final`, pid) >= MIB << 20, "tracking gone: every page saved");
    assert(pagesSize(`${dir}/final`, child) >= MIB << 20, "the new child: every page saved");
    await until("dumped tree gone", () => gone(pid) && gone(child));

    const r = await runCkpt(["restore", "-D", `${dir}/final`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assert(!hasUffd(child), "the inherited tracking fd is not restored");
    assertEquals(await checksum(dir, pid), want);
    assertEquals(await checksum(dir, child), wantChild);
  } finally {
    await killAndForget(child);
    await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pre-dump refusals (restoring a pre-dump, a missing parent, --stream), then --lazy-pages from the chain", async () => {
  const dir = await tempDir("incr-bad");
  const pid = await start(dir);
  try {
    const missing = await runCkpt([
      "dump",
      "-t",
      String(pid),
      "-D",
      `${dir}/x`,
      "--prev-images-dir",
      "../nope",
    ]);
    assertEquals(missing.code, 1);
    assertMatch(missing.stderr, /^ckpt: .*nope.*\n$/);
    assert(alive(pid), "a refused dump leaves the tree running");

    await ok(["pre-dump", "-t", String(pid), "-D", `${dir}/pre`]);
    const notAlone = await runCkpt(["restore", "-D", `${dir}/pre`, "-d"]);
    assertEquals(notAlone.code, 1);
    assertMatch(notAlone.stderr, /^ckpt: .*is a pre-dump.*--prev-images-dir.*\n$/);

    const stream = await runCkpt(["dump", "-t", String(pid), "--stream", "--prev-images-dir", "p"]);
    assertEquals(stream.code, 2);
    assert(alive(pid));

    const want = await checksum(dir, pid);
    await ok(["dump", "-t", String(pid), "-D", `${dir}/final`, "--prev-images-dir", "../pre"]);
    await until("dumped pid gone", () => gone(pid));
    Deno.renameSync(`${dir}/pre`, `${dir}/moved`);
    const lost = await runCkpt(["restore", "-D", `${dir}/final`, "-d"]);
    assertEquals(lost.code, 1);
    assertMatch(lost.stderr, /^ckpt: .*pre: missing: the parent images .*\n$/);
    assert(gone(pid), "nothing started");
    Deno.renameSync(`${dir}/moved`, `${dir}/pre`);

    // Lazily, the pages in the parents are served from there.
    const r = await runCkpt(["restore", "-D", `${dir}/final`, "-d", "--lazy-pages"]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(await checksum(dir, pid), want);
  } finally {
    await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tracking a pre-dump left behind is dropped by a fresh pre-dump and by a plain dump", async () => {
  const dir = await tempDir("incr-left");
  const pid = await start(dir);
  const uffds = () =>
    [...Deno.readDirSync(`/proc/${pid}/fd`)].filter((e) => {
      try {
        return Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`) === "anon_inode:[userfaultfd]";
      } catch {
        return false;
      }
    }).length;
  try {
    await ok(["pre-dump", "-t", String(pid), "-D", `${dir}/a`]);
    await ok(["pre-dump", "-t", String(pid), "-D", `${dir}/b`]);
    assertEquals(uffds(), 1, "a fresh pre-dump replaces the tracking it did not take over");
    await poke(dir, pid, "SIGUSR1", /^wrote .* gen=1$/);
    const want = await checksum(dir, pid);
    // Its dump never comes: a plain dump closes the tracking and saves all.
    await ok(["dump", "-t", String(pid), "-D", `${dir}/full`]);
    assert(pagesSize(`${dir}/full`, pid) >= MIB << 20);
    await until("dumped pid gone", () => gone(pid));
    const r = await runCkpt(["restore", "-D", `${dir}/full`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(uffds(), 0);
    assertEquals(await checksum(dir, pid), want);
  } finally {
    await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a pre-dump that fails after the tree runs again (disk full) takes its tracking back out", async () => {
  const dir = await tempDir("incr-full");
  const pid = await start(dir);
  const full = `${dir}/full`;
  Deno.mkdirSync(full);
  const mount = (...args: string[]) =>
    new Deno.Command(args[0], { args: args.slice(1) }).outputSync();
  mount("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", full);
  try {
    const r = await runCkpt(["pre-dump", "-t", String(pid), "-D", `${full}/pre`]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /^ckpt: [^\n]*no space left[^\n]*\n$/);
    assert(alive(pid), "the tree runs on");
    assert(!hasUffd(pid), "no tracking fd left behind");
    assertEquals([...Deno.readDirSync(full)].length, 0, "nothing left written, no directory made");
    await poke(dir, pid, "SIGUSR1", /^wrote .* gen=1$/);
  } finally {
    mount("umount", full);
    await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});
