// File locks of a real tree across dump and restore: flock, POSIX byte ranges
// and OFD locks are held again by the restored processes (another process
// cannot take them, and can once the tree is gone); a lock someone else took
// meanwhile fails the restore with one line naming the file and the holder.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { ROOT, runCkpt } from "./helpers/ckpt.ts";
import { PEERS, startPython, stopPython } from "./helpers/peers.ts";
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

async function probe(dir: string): Promise<Record<string, string>> {
  const out = await new Deno.Command("python3", {
    args: [`${PEERS}lockprobe.py`, "probe", dir],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** What the locker holds, as another process meets it. */
const HELD = {
  flock_ex: "held",
  flock_sh: "held",
  shared_ex: "held",
  shared_sh: "free", // a read flock
  posix_w150: "held",
  posix_r150: "held",
  posix_w250: "free", // between its two ranges
  posix_w400: "held",
  posix_r400: "free", // a read lock to the end
  ofd_w5: "held",
  ofd_w20: "free",
};
const FREE = Object.fromEntries(Object.keys(HELD).map((k) => [k, "free"]));

async function startLocker(dir: string) {
  const p = startSession([`${WORKLOADS}/locker`, dir]);
  await until("locker ready", () => readText(`${dir}/log`).includes("ready"));
  const child = Number(/child=(\d+)/.exec(readText(`${dir}/log`))![1]);
  return { ...p, child };
}

async function dumpAndWait(
  p: { pid: number; child: number; status: Promise<unknown> },
  dir: string,
  extra: string[] = [],
) {
  const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`, ...extra]);
  assertEquals(d.code, 0, d.stderr);
  await p.status;
  await until("the tree gone", () => gone(p.pid) && gone(p.child));
}

Deno.test("flock, POSIX and OFD locks are held again after restore: another process cannot take them", async () => {
  const dir = await tempDir("locks");
  let p: Awaited<ReturnType<typeof startLocker>> | undefined;
  try {
    p = await startLocker(dir);
    assertEquals(await probe(dir), HELD, "what the locker holds before the dump");
    // Locks are saved by default; CRIU's --file-locks is accepted and changes nothing.
    await dumpAndWait(p, dir, ["--file-locks"]);
    assertEquals(await probe(dir), FREE, "the dump's kill released every lock");

    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d", "--file-locks"]);
    assertEquals(r.code, 0, r.stderr);
    assert(alive(p.pid) && alive(p.child));
    assertEquals(await probe(dir), HELD, "the restored tree holds every lock again");
    // POSIX locks are the process's own again (its pid in /proc/locks).
    const locks = readText("/proc/locks");
    assertMatch(locks, new RegExp(`POSIX  ADVISORY  WRITE ${p.pid} \\S+ 100 199`));
    assertMatch(locks, new RegExp(`POSIX  ADVISORY  READ ${p.pid} \\S+ 300 EOF`));
    Deno.kill(p.pid, "SIGUSR1");
    await until("locker report", () => readText(`${dir}/log`).includes("held "));
    assertStringIncludes(readText(`${dir}/log`), `held pid=${p.pid} ofd=taken`);

    // The shared description keeps its read flock while either process holds it.
    await killAndForget(p.pid);
    const left = await probe(dir);
    assertEquals(left.shared_ex, "held", "the child still holds the shared description");
    assertEquals(left.flock_ex, "held", "and the flock and OFD descriptions it inherited");
    assertEquals(left.posix_w150, "free", "POSIX locks went with their process");
    await killAndForget(p.child);
    assertEquals(await probe(dir), FREE);
  } finally {
    if (p) {
      await killAndForget(p.pid);
      await killAndForget(p.child);
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a lock another process took meanwhile fails the restore naming the file and the holder", async () => {
  const dir = await tempDir("locks-taken");
  let p: Awaited<ReturnType<typeof startLocker>> | undefined;
  let holder: ReturnType<typeof startPython> | undefined;
  try {
    p = await startLocker(dir);
    await dumpAndWait(p, dir);

    for (const kind of ["flock", "ofd"]) {
      holder = startPython("lockprobe.py", ["hold", dir, kind]);
      const { pid } = await holder.next<{ pid: number }>();
      const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
      assertEquals(r.code, 1);
      assertEquals(r.stderr.split("\n").length, 2, r.stderr);
      const what = kind === "flock" ? "flock (write)" : "OFD write lock on bytes 0-9";
      assertStringIncludes(r.stderr, `${dir}/${kind}: its ${what} is held by pid ${pid} (python3)`);
      assert(!alive(p.pid) && !alive(p.child), "nothing was left running");
      await stopPython(holder);
      holder = undefined;
    }

    // Let go, the same images restore.
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(await probe(dir), HELD);
  } finally {
    await stopPython(holder);
    if (p) {
      await killAndForget(p.pid);
      await killAndForget(p.child);
    }
    await Deno.remove(dir, { recursive: true });
  }
});

/** What another writer meets: "free", or sqlite's "database is locked". */
async function otherWriter(dir: string): Promise<{ state: string; rows: number[] }> {
  const prog = `import json, sqlite3
db = sqlite3.connect("${dir}/db", timeout=0, isolation_level=None)
rows = [r[0] for r in db.execute("select x from t")]
try:
    db.execute("BEGIN IMMEDIATE")
    db.execute("ROLLBACK")
    state = "free"
except sqlite3.OperationalError as e:
    state = str(e)
print(json.dumps({"state": state, "rows": rows}))`;
  const out = await new Deno.Command("python3", { args: ["-c", prog], stdout: "piped" }).output();
  assertEquals(out.code, 0);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("sqlite in WAL mode with a write transaction open: still the only writer after restore, and commits", async () => {
  const dir = await tempDir("sqlite");
  const log = `${dir}/log`;
  const p = startSession(["python3", `${ROOT}/tests/workloads/sqlite_txn.py`, dir]);
  try {
    await until("transaction open", () => readText(log).includes("ready"));
    const pid = Number(/ready (\d+)/.exec(readText(log))![1]);
    assertEquals(await otherWriter(dir), { state: "database is locked", rows: [] });
    const d = await runCkpt(["dump", "-t", String(pid), "-D", `${dir}/images`]);
    assertEquals(d.code, 0, d.stderr);
    await p.status;
    await until(`pid ${pid} free`, () => gone(pid));
    // Nobody touches the database in between (opening it would recover the
    // WAL and change the file under the dump).
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(await otherWriter(dir), { state: "database is locked", rows: [] });
    Deno.kill(pid, "SIGUSR1");
    await until("committed", () => readText(log).includes("committed"));
    assertEquals(await otherWriter(dir), { state: "free", rows: [42] });
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a lease is refused at dump, naming the fd, and the process runs on", async () => {
  const dir = await tempDir("lease");
  const log = `${dir}/log`;
  await Deno.writeTextFile(`${dir}/f`, "data");
  const prog = `import fcntl, os, time
fd = os.open("${dir}/f", os.O_RDONLY)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
open("${log}", "w").write("ready %d\\n" % os.getpid())
while True:
    open("${log}", "a").write("tick\\n")
    time.sleep(0.02)`;
  const p = startSession(["python3", "-c", prog]);
  try {
    await until("lease taken", () => readText(log).includes("ready"));
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(r.code, 1);
    assertMatch(
      r.stderr,
      /^ckpt: fd 3 of pid \d+ \(.*\/f\) holds a lease \(1: LEASE +ACTIVE +READ /,
    );
    const n = readText(log).length;
    await until("still running", () => readText(log).length > n);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
