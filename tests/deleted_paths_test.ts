// Objects whose path was deleted (or replaced) while the tree held them, and
// messages queued with their senders' credentials: the restored program
// checks what it holds itself (tests/peers/deleted_paths.py).
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  startSession,
  tempDir,
  until,
} from "./helpers/proc.ts";
import { PEERS } from "./helpers/peers.ts";
import { tempUser, userPython } from "./helpers/user.ts";

type Json = Record<string, unknown>;

/** Starts MODE, dumps it, restores it, lets it look: its before.json and
 * after.json, and the restore's stderr. */
async function roundTrip(
  mode: string,
  check: (dir: string, before: Json, after: Json, stderr: string) => void | Promise<void>,
) {
  const dir = await tempDir(`deleted-${mode}`);
  const p = startSession([
    "sh",
    "-c",
    `exec python3 ${PEERS}deleted_paths.py ${mode} ${dir} 2>${dir}/err`,
  ]);
  const pids: number[] = [p.pid];
  try {
    await until("set up", () => readText(`${dir}/before.json`) !== "" || gone(p.pid));
    assertEquals(readText(`${dir}/err`), "");
    const before = JSON.parse(readText(`${dir}/before.json`));
    for (const k of ["child", "dead"]) if (typeof before[k] === "number") pids.push(before[k]);
    const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(d.code, 0, d.stderr);
    await p.status;
    for (const pid of pids) await until(`pid ${pid} free`, () => gone(pid));
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    await Deno.writeTextFile(`${dir}/go`, "");
    await until(
      "restored process reports",
      () => readText(`${dir}/after.json`) !== "" || readText(`${dir}/err`) !== "",
    );
    assertEquals(readText(`${dir}/err`), "");
    await check(dir, before, JSON.parse(readText(`${dir}/after.json`)), r.stderr);
  } finally {
    for (const pid of pids) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("deleted paths: sockets bound in directories deleted since keep their names", async () => {
  await roundTrip("sockdir", (dir, before, a) => {
    assertEquals(a.l, `${dir}/gone/sub/l.sock`, "listener's getsockname");
    assertEquals(a.d, `${dir}/gone/sub/d.sock`, "dgram socket's getsockname");
    assertEquals(a.l, before.l);
    assertEquals(a.c_peer, `${dir}/gone/sub/d.sock`, "its client is still connected to it");
    assertEquals(a.gone_exists, false, "the directories are gone again");
    assertEquals(a.accepted, "waited", "the client waiting in accept() is there");
    assertEquals(a.queued, ["queued-before", `${dir}/c.sock`]);
    assertEquals(a.sent_after, ["sent-after", `${dir}/c.sock`]);
  });
});

Deno.test("deleted paths: a listener whose socket file was removed keeps its connections and names", async () => {
  await roundTrip("rmsock", async (dir, before, a) => {
    const path = `${dir}/s.sock`;
    assertEquals(before.a, path, "an accepted socket shows its listener's name");
    assertEquals(a.l, path, "listener's getsockname");
    assertEquals(a.a, path, "the accepted socket's getsockname");
    assertEquals(a.waiting_peer, path, "the client waiting in accept() is connected to it");
    assertEquals(a.exists, false, "the path is still gone");
    assertEquals(a.new_connect, "FileNotFoundError", "nobody new can connect");
    assertEquals(a.from_child, "after", "the child's connection is the same");
    assertEquals(a.accepted, "waited");
    await until("child reports", () => readText(`${dir}/child.json`) !== "");
    assertEquals(JSON.parse(readText(`${dir}/child.json`)), { got: "reply", peer: path });
  });
});

Deno.test("accepted connections on abstract names keep them, their listener open or closed", async () => {
  await roundTrip("abstract", (_dir, before, a) => {
    assertEquals(a.names, before.names, "getsockname and the clients' getpeername");
    assertEquals(a.a_got, "queued");
    assertEquals(a.c_got, "x");
    assertEquals(a.ga_got, "g");
    assertEquals(a.waiting, "w", "the client waiting in accept() is still the next one");
    assertEquals(a.closed_name_free, true, "the closed listener's name is nobody's");
  });
});

Deno.test("deleted paths: two listeners on one path, the path stays its owner's", async () => {
  await roundTrip("twolisteners", (dir, _before, a) => {
    assertEquals(a.first, `${dir}/s.sock`);
    assertEquals(a.second, `${dir}/s.sock`);
    assertEquals(a.is_socket, true, "the path exists");
    assertEquals(a.late_connect, "ok");
    assertEquals(a.first_got, ["for-first", "late"], "the path leads to the first listener");
    assertEquals(a.second_got, ["for-second"], "the second kept only its own client");
  });
});

Deno.test("deleted paths: a deleted FIFO in a deleted directory still joins its two tasks", async () => {
  await roundTrip("fifo", async (dir, _before, a) => {
    assertEquals(a.link, `${dir}/fd/f (deleted)`, "as the kernel shows a deleted FIFO");
    assertEquals(a.nlink, 0);
    assertEquals(a.dir_exists, false);
    assertEquals(a.queued, "queued|", "the queued bytes are back");
    assertEquals(a.from_child, "after", "the other task's end is the same FIFO");
    await until("child reports", () => readText(`${dir}/child.json`) !== "");
    assertEquals(JSON.parse(readText(`${dir}/child.json`)).link, `${dir}/fd/f (deleted)`);
  });
});

Deno.test("deleted paths: a deleted cwd (and parent) and a deleted directory fd", async () => {
  await roundTrip("cwd", (dir, _before, a) => {
    assertEquals(a.cwd_link, `${dir}/w/x (deleted)`, "/proc/self/cwd");
    assertEquals(a.getcwd, "FileNotFoundError", "getcwd fails as on a deleted cwd");
    assertEquals(a.nlink, 0);
    assertEquals(a.mode, "0o751", "its mode");
    assertEquals(a.parent_nlink, 0, "its parent was deleted too");
    assertEquals(a.grandparent_is_top, true, "../.. is the real directory above");
    assertEquals(a.w_exists, false, "nothing left behind");
    assertEquals(a.w2_exists, false);
    assertEquals(a.dfd_link, `${dir}/w2 (deleted)`);
    assertEquals(a.dfd_entries, []);
    assertEquals(a.create, "FileNotFoundError", "nothing can be made in it");
  });
});

Deno.test("deleted paths: a file deleted with its directory comes back where it was", async () => {
  await roundTrip("ghostdir", (dir, _before, a) => {
    assertEquals(a.link, `${dir}/g/h/data (deleted)`);
    assertEquals(a.content, "kept-content");
    assertEquals(a.mode, "0o640");
    assertEquals(a.shared, "KEPT", "the mapping and the fd are one file");
    assertEquals(a.g_exists, false, "its directories are gone again");
  });
});

Deno.test("queued messages keep their senders' credentials (SO_PASSCRED)", async () => {
  await roundTrip("creds", (_dir, before, a, stderr) => {
    const pid = before.pid as number, child = before.child as number, dead = before.dead as number;
    const want = [
      ["from-self", [pid, 0, 0]],
      ["from-child", [child, 4321, 1234]],
      ["from-dead", [dead, 666, 555]],
      ["no-creds", [0, 65534, 65534]],
    ];
    assertEquals(before.dgrams, want, "what the program saw before the dump");
    assertEquals(a.dgrams, want, "the same credentials after restore");
    assertEquals(a.stream, [["self-bytes|", [pid, 0, 0]], ["child-bytes", [child, 4321, 1234]]]);
    assert(!/credential/i.test(stderr), stderr);
  });
});

// As a user: restore makes a deleted directory again with the task's
// authority, never through a symlink, and what the task could not have
// made itself is refused at dump.
const CWD_REPORTER = `
import os, signal, sys, time
d, where = sys.argv[1], sys.argv[2]
log = os.open(d + "/log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
def say(s): os.write(log, (s + "\\n").encode())
os.chdir(where)
def report(*_):
    st = os.stat(".")
    say(f"cwd={os.readlink('/proc/self/cwd')} uid={st.st_uid} nlink={st.st_nlink}")
signal.signal(signal.SIGUSR1, report)
while os.path.exists(where):
    time.sleep(0.02)
say("ready")
while True: time.sleep(1)
`;

Deno.test("deleted paths: a user's deleted cwd is made again as the user, never through a symlink", async () => {
  const u = await tempUser();
  const root = await tempDir("deleted-root");
  Deno.chmodSync(root, 0o755);
  const log = `${u.dir}/log`;
  const started: number[] = [];
  try {
    u.sh(`mkdir -p ${u.dir}/w/x`);
    const p = startSession(userPython(u, CWD_REPORTER, u.dir, `${u.dir}/w/x`));
    started.push(p.pid);
    await until("chdir", () => Deno.readLinkSync(`/proc/${p.pid}/cwd`) === `${u.dir}/w/x`);
    u.sh(`rmdir ${u.dir}/w/x ${u.dir}/w`);
    await until("ready", () => readText(log).includes("ready"));
    const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${root}/img`]);
    assertEquals(d.code, 0, d.stderr);
    await p.status;
    await until("pid free", () => gone(p.pid));
    // The user puts a symlink where the deleted directory's parent was.
    u.sh(`ln -s ${root} ${u.dir}/w`);
    const bad = await runCkpt(["restore", "-D", `${root}/img`, "-d"]);
    assertEquals(bad.code, 1, bad.stderr);
    assertMatch(bad.stderr, /^ckpt: [^\n]+\n$/);
    assertMatch(bad.stderr, /deleted directory .*\/w\/x again: a symlink is on its path now/);
    assert(gone(p.pid), "nothing runs");
    assertEquals([...Deno.readDirSync(root)].map((e) => e.name), ["img"], "nothing made there");
    Deno.removeSync(`${u.dir}/w`);
    const r = await runCkpt(["restore", "-D", `${root}/img`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    Deno.kill(p.pid, "SIGUSR1");
    await until("report", () => readText(log).includes("cwd="));
    assertStringIncludes(readText(log), `cwd=${u.dir}/w/x (deleted) uid=${u.uid} nlink=0`);
    assertEquals(readText(log).includes("w/x.ckpt"), false);
    assertEquals(
      [...Deno.readDirSync(u.dir)].map((e) => e.name),
      ["log"],
      "nothing left in the user's directory",
    );
  } finally {
    for (const pid of started) await killAndForget(pid);
    await u.remove();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("deleted paths: a cwd the user could not make again, a FIFO shared outside: refused at dump", async () => {
  const u = await tempUser();
  const root = await tempDir("deleted-root");
  Deno.chmodSync(root, 0o755);
  const started: number[] = [];
  let outside: Deno.FsFile | undefined;
  try {
    // Root's directory, in which root made the one the user's process is in.
    Deno.mkdirSync(`${root}/x`, { mode: 0o777 });
    Deno.chmodSync(`${root}/x`, 0o777);
    const p = startSession(userPython(u, CWD_REPORTER, u.dir, `${root}/x`));
    started.push(p.pid);
    await until("chdir", () => Deno.readLinkSync(`/proc/${p.pid}/cwd`) === `${root}/x`);
    Deno.removeSync(`${root}/x`);
    await until("ready", () => readText(`${u.dir}/log`).includes("ready"));
    const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${root}/img`]);
    assertEquals(d.code, 1, d.stderr);
    assertMatch(d.stderr, /^ckpt: [^\n]+\n$/);
    assertStringIncludes(d.stderr, `is the deleted directory ${root}/x, and pid ${p.pid}`);
    assertStringIncludes(d.stderr, `may not make anything in ${root}`);
    assert(alive(p.pid), "the tree runs on");

    // A FIFO whose other end this test (outside the tree) holds.
    const fifo = `${root}/f`;
    const q = startSession([
      "python3",
      "-c",
      `import os, sys, time
r = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
open(sys.argv[1] + ".ready", "w").close()
while True: time.sleep(1)`,
      fifo,
    ]);
    started.push(q.pid);
    new Deno.Command("mkfifo", { args: [fifo] }).outputSync();
    await until("FIFO open", () => readText(`${fifo}.ready`) !== "" || exists(`${fifo}.ready`));
    outside = Deno.openSync(fifo, { write: true });
    Deno.removeSync(fifo);
    const f = await runCkpt(["dump", "-t", String(q.pid), "-D", `${root}/img2`]);
    assertEquals(f.code, 1, f.stderr);
    assertStringIncludes(f.stderr, `the deleted FIFO ${fifo} is shared with pid ${Deno.pid}`);
    assert(alive(q.pid), "the tree runs on");
  } finally {
    outside?.close();
    for (const pid of started) await killAndForget(pid);
    await u.remove();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("deleted paths: a listener whose socket file was moved is refused at dump, the tree running on", async () => {
  const dir = await tempDir("deleted-moved");
  const p = startSession([
    "python3",
    "-c",
    `import os, socket, sys, time
d = sys.argv[1]
os.mkdir(d + "/a")
l = socket.socket(socket.AF_UNIX)
l.bind(d + "/a/s.sock")
l.listen(4)
os.rename(d + "/a", d + "/b")
open(d + "/ready", "w").close()
while True:
    c, _ = l.accept()
    c.send(b"still-here")`,
    dir,
  ]);
  try {
    await until("ready", () => exists(`${dir}/ready`));
    const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/img`]);
    assertEquals(d.code, 1, d.stderr);
    assertMatch(d.stderr, /^ckpt: [^\n]+\n$/);
    assertStringIncludes(
      d.stderr,
      `of pid ${p.pid} fd 3 is bound to ${dir}/a/s.sock, whose file was moved to ${dir}/b/s.sock`,
    );
    assert(alive(p.pid), "the tree runs on");
    const got = new Deno.Command("python3", {
      args: [
        "-c",
        "import socket,sys; c=socket.socket(socket.AF_UNIX); c.connect(sys.argv[1]); " +
        "print(c.recv(100).decode())",
        `${dir}/b/s.sock`,
      ],
    }).outputSync();
    assertEquals(new TextDecoder().decode(got.stdout).trim(), "still-here");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deleted paths: a deleted FIFO that has another name is refused at dump", async () => {
  const dir = await tempDir("deleted-fifolink");
  const p = startSession([
    "python3",
    "-c",
    `import os, sys, time
d = sys.argv[1]
os.mkfifo(d + "/f")
os.link(d + "/f", d + "/g")
r = os.open(d + "/f", os.O_RDONLY | os.O_NONBLOCK)
os.unlink(d + "/f")
open(d + "/ready", "w").close()
while True: time.sleep(1)`,
    dir,
  ]);
  try {
    await until("ready", () => exists(`${dir}/ready`));
    const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/img`]);
    assertEquals(d.code, 1, d.stderr);
    assertMatch(d.stderr, /^ckpt: [^\n]+\n$/);
    assertStringIncludes(d.stderr, `fd 3 of pid ${p.pid}`);
    assertStringIncludes(d.stderr, `the FIFO ${dir}/f was deleted but still has other names`);
    assert(alive(p.pid), "the tree runs on");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
