// Root restores an ordinary user's process with that user's authority, never
// its own. Each test has a throwaway user whose process root dumps; before
// (or while) root restores it, the user swaps what the process had for
// something of root's. Nothing of root's may change (content, owner, mode),
// no root-owned set-id file may appear, no fd the user could not open may
// land in the restored process: the restore either succeeds with the user's
// own objects or refuses in one line.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  startSession,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";
import { type TempUser, tempUser, userPython } from "./helpers/user.ts";

interface Snap {
  content: string;
  uid: number;
  gid: number;
  mode: number;
  ino: number;
}

function snap(path: string): Snap {
  const st = Deno.lstatSync(path);
  return {
    content: st.isFile ? Deno.readTextFileSync(path) : "",
    uid: st.uid!,
    gid: st.gid!,
    mode: st.mode! & 0o7777,
    ino: st.ino!,
  };
}

/** A root-only file in a root directory the user may look into. */
async function rootSecret(name: string, content: string): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "ckpt-root-" });
  Deno.chmodSync(dir, 0o755);
  const path = `${dir}/${name}`;
  Deno.writeTextFileSync(path, content, { mode: 0o600 });
  Deno.chmodSync(path, 0o600);
  return { dir, path };
}

async function dumpAndKill(pid: number, status: Promise<Deno.CommandStatus>, images: string) {
  const r = await runCkpt(["dump", "-t", String(pid), "-D", images]);
  assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
  await status;
  await until(`pid ${pid} free`, () => gone(pid));
}

/** A restore that must be refused in one line matching `why`; nothing runs. */
async function refused(images: string, pid: number, why: RegExp, extra: string[] = []) {
  const r = await runCkpt(["restore", "-D", images, "-d", ...extra]);
  assertEquals(r.code, 1, `restore should be refused (${why}): ${r.stdout}${r.stderr}`);
  assertMatch(r.stderr, /^ckpt: [^\n]+\n$/, "one line");
  assertMatch(r.stderr, why);
  assert(gone(pid), "nothing of the tree runs");
}

async function restored(images: string, pid: number, extra: string[] = []) {
  const r = await runCkpt(["restore", "-D", images, "-d", ...extra]);
  assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
  assert(alive(pid));
}

/** No file in dir is root's and set-id (what a ghost recreated by root was). */
function noRootSetId(dir: string): void {
  for (const e of Deno.readDirSync(dir)) {
    const st = Deno.lstatSync(`${dir}/${e.name}`);
    assert(!(st.uid === 0 && (st.mode! & 0o6000)), `${e.name} is a root-owned set-id file`);
  }
}

/** Images go where root keeps them: restore trusts no directory a user
 * could write to (or rename in). */
const imageDirs: string[] = [];
async function rootImages(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "ckpt-authority-" });
  imageDirs.push(d);
  return `${d}/img`;
}

async function withUser(fn: (u: TempUser) => Promise<void>): Promise<void> {
  const u = await tempUser();
  try {
    await fn(u);
  } finally {
    await u.remove();
    for (const d of imageDirs.splice(0)) await Deno.remove(d, { recursive: true });
  }
}

const REPORTER = `
import os, signal, sys, time
d = sys.argv[1]
os.chdir(d)
log = os.open(d + "/log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
def say(s): os.write(log, (s + "\\n").encode())
`;

Deno.test("a deleted set-uid file comes back owned by its user, never by root", async () => {
  await withUser(async (u) => {
    const script = REPORTER + `
fd = os.open("suid", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, b"#!/bin/sh\\necho owned\\n")
os.fchmod(fd, 0o4755)
os.unlink("suid")
def report(*_):
    st = os.fstat(fd)
    say(f"fd={fd} uid={st.st_uid} gid={st.st_gid} mode={st.st_mode & 0o7777:o} data={os.pread(fd, 64, 0)!r}")
signal.signal(signal.SIGUSR1, report)
say("ready")
while True: time.sleep(1)
`;
    const p = startSession(userPython(u, script, u.dir));
    const log = `${u.dir}/log`;
    try {
      await until("ready", () => readText(log).includes("ready"));
      const img = await rootImages();
      await dumpAndKill(p.pid, p.status, img);
      await restored(img, p.pid);
      noRootSetId(u.dir);
      Deno.kill(p.pid, "SIGUSR1");
      await until("report", () => readText(log).includes("uid="));
      const line = readText(log).match(/fd=(\d+) uid=(\d+) gid=(\d+) mode=(\d+) data=(.*)/)!;
      assertEquals([+line[2], +line[3], line[4]], [u.uid, u.gid, "4755"], line[0]);
      assertStringIncludes(line[5], "echo owned");
      const st = Deno.statSync(`/proc/${p.pid}/fd/${line[1]}`);
      assertEquals([st.uid, st.gid, st.mode! & 0o7777], [u.uid, u.gid, 0o4755]);
      assertEquals(st.nlink, 0, "unlinked again");
    } finally {
      await killAndForget(p.pid);
    }
  });
});

Deno.test("deleted files: owner and mode as they were; one the task could not have made is refused at dump", async () => {
  await withUser(async (u) => {
    // A root task holding a file of the user's, 0640, deleted: exact.
    const root = `${u.dir}/root-task`;
    Deno.mkdirSync(root);
    const script = REPORTER + `
uid, gid = int(sys.argv[2]), int(sys.argv[3])
fd = os.open("owned", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, b"users-data")
os.fchown(fd, uid, gid)
os.fchmod(fd, 0o2640)
os.unlink("owned")
def report(*_):
    st = os.fstat(fd)
    say(f"uid={st.st_uid} gid={st.st_gid} mode={st.st_mode & 0o7777:o} data={os.pread(fd, 64, 0)!r}")
signal.signal(signal.SIGUSR1, report)
say("ready")
while True: time.sleep(1)
`;
    const p = startSession(["/usr/bin/python3", "-c", script, root, String(u.uid), String(u.gid)]);
    try {
      await until("ready", () => readText(`${root}/log`).includes("ready"));
      const img = await rootImages();
      await dumpAndKill(p.pid, p.status, img);
      await restored(img, p.pid);
      Deno.kill(p.pid, "SIGUSR1");
      await until("report", () => readText(`${root}/log`).includes("uid="));
      assertStringIncludes(
        readText(`${root}/log`),
        `uid=${u.uid} gid=${u.gid} mode=2640 data=b'users-data'`,
      );
    } finally {
      await killAndForget(p.pid);
    }

    // The user's task holding a deleted root file: it could not make one.
    const file = `${u.dir}/rootfile`;
    Deno.writeTextFileSync(file, "root-data", { mode: 0o644 });
    Deno.chmodSync(file, 0o644);
    const q = startSession(userPython(
      u,
      REPORTER + `
fd = os.open("rootfile", os.O_RDONLY)
say("ready")
while True: time.sleep(1)
`,
      u.dir,
    ));
    try {
      await until("ready", () => readText(`${u.dir}/log`).includes("ready"));
      Deno.removeSync(file);
      const r = await runCkpt(["dump", "-t", String(q.pid), "-D", await rootImages()]);
      assertEquals(r.code, 1, r.stderr);
      assertMatch(r.stderr, /rootfile is owned by uid 0: pid \d+ \(uid \d+\)/);
      assertMatch(r.stderr, /could not make such a file itself/);
      assert(alive(q.pid), "a refused dump leaves the process running");
    } finally {
      await killAndForget(q.pid);
    }
  });
});

Deno.test("a FIFO swapped for a symlink to a root file, or for another file: refused, root's file untouched", async () => {
  await withUser(async (u) => {
    const secret = await rootSecret("secret", "TOPSECRET-0123456789");
    const before = snap(secret.path);
    const script = REPORTER + `
os.mkfifo("fifo", 0o600)
fd = os.open("fifo", os.O_RDWR | os.O_NONBLOCK)
os.write(fd, b"queued-bytes")
def report(*_):
    try: data = os.read(fd, 100)
    except BlockingIOError: data = b""
    say(f"read={data!r}")
signal.signal(signal.SIGUSR1, report)
say("ready")
while True: time.sleep(1)
`;
    const p = startSession(userPython(u, script, u.dir));
    const img = await rootImages();
    try {
      await until("ready", () => readText(`${u.dir}/log`).includes("ready"));
      await dumpAndKill(p.pid, p.status, img);

      u.sh(`cd ${u.dir} && rm fifo && ln -s ${secret.path} fifo`);
      await refused(img, p.pid, /fifo: a symlink is on its path now/);
      assertEquals(snap(secret.path), before, "root's file is as it was");

      u.sh(`cd ${u.dir} && rm fifo && printf 'not a fifo' > fifo`);
      await refused(img, p.pid, /fifo: it is a regular file now; it was a FIFO at dump/);

      // Another FIFO of the user's: not the one the dump saw (same machine);
      // with --file-validation=none it is the task's own, and gets the bytes.
      u.sh(`cd ${u.dir} && rm fifo && mkfifo -m 600 fifo`);
      await refused(img, p.pid, /fifo: it is not the file the dump saw/);
      await restored(img, p.pid, ["--file-validation=none"]);
      Deno.kill(p.pid, "SIGUSR1");
      await until("report", () => readText(`${u.dir}/log`).includes("read="));
      assertStringIncludes(readText(`${u.dir}/log`), "read=b'queued-bytes'");
      assertEquals(snap(secret.path), before, "root's file is as it was");
    } finally {
      await killAndForget(p.pid);
      await Deno.remove(secret.dir, { recursive: true });
    }
  });
});

Deno.test("a regular file swapped for a root file of the same size: refused; the user's own file only as itself", async () => {
  await withUser(async (u) => {
    // Root's directory holds "data" too: the same name, the same size.
    const secret = await rootSecret("data", "ROOT-ONLY-012345");
    const script = REPORTER + `
os.mkdir("sub")
with open("sub/data", "w") as f: f.write("users-own-012345")
fd = os.open("sub/data", os.O_RDWR)
def report(*_):
    st = os.fstat(fd)
    say(f"read={os.pread(fd, 64, 0)!r} uid={st.st_uid}")
signal.signal(signal.SIGUSR1, report)
say("ready")
while True: time.sleep(1)
`;
    const secretSnap = snap(secret.path);
    assertEquals(secretSnap.content.length, "users-own-012345".length, "the same size");
    const p = startSession(userPython(u, script, u.dir));
    const img = await rootImages();
    try {
      await until("ready", () => readText(`${u.dir}/log`).includes("ready"));
      await dumpAndKill(p.pid, p.status, img);

      // The file itself replaced by a symlink to root's.
      u.sh(`cd ${u.dir} && mv sub/data sub/data.old && ln -s ${secret.path} sub/data`);
      await refused(img, p.pid, /sub\/data: a symlink is on its path now/);
      // Its directory replaced by a symlink to root's directory.
      u.sh(`cd ${u.dir} && rm sub/data && mv sub sub.old && ln -s ${secret.dir} sub`);
      await refused(img, p.pid, /sub\/data: a symlink is on its path now/);
      assertEquals(snap(secret.path), secretSnap, "root's file is as it was");

      // Another file of the user's, same size: not the one the dump saw; with
      // --file-validation=none the task gets that file, its own.
      u.sh(`cd ${u.dir} && rm sub && mv sub.old sub && printf 'replaced-by-user' > sub/data`);
      await refused(img, p.pid, /sub\/data: it is not the file the dump saw/);
      await restored(img, p.pid, ["--file-validation=none"]);
      Deno.kill(p.pid, "SIGUSR1");
      await until("report", () => readText(`${u.dir}/log`).includes("read="));
      assertStringIncludes(readText(`${u.dir}/log`), `read=b'replaced-by-user' uid=${u.uid}`);
      assertEquals(snap(secret.path), secretSnap, "root's file is as it was");
    } finally {
      await killAndForget(p.pid);
      await Deno.remove(secret.dir, { recursive: true });
    }
  });
});

const SERVER = REPORTER + `
import socket
path = sys.argv[2]
os.makedirs(os.path.dirname(path), exist_ok=True)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o660)
s.listen(4)
say("ready")
while True:
    c, _ = s.accept()
    c.sendall(b"pong:" + c.recv(64))
    c.close()
`;

async function ping(path: string): Promise<string> {
  const c = await Deno.connect({ transport: "unix", path });
  try {
    await c.write(new TextEncoder().encode("ping"));
    const buf = new Uint8Array(64);
    const n = await c.read(buf);
    return new TextDecoder().decode(buf.subarray(0, n ?? 0));
  } finally {
    c.close();
  }
}

Deno.test("a bound socket whose directory became a symlink to root's: no root socket removed, none bound there", async () => {
  await withUser(async (u) => {
    // A stale root socket (bound, then its owner exited) named like the user's.
    const rootDir = await rootSecret("unused", "x");
    const rootSock = `${rootDir.dir}/sock`;
    const mk = new Deno.Command("/usr/bin/python3", {
      args: ["-c", `import socket; s = socket.socket(socket.AF_UNIX); s.bind("${rootSock}")`],
    }).outputSync();
    assert(mk.success);
    const before = snap(rootSock);
    const sock = `${u.dir}/sub/sock`;
    const p = startSession(userPython(u, SERVER, u.dir, sock));
    const img = await rootImages();
    try {
      await until("ready", () => readText(`${u.dir}/log`).includes("ready"));
      assertEquals(await ping(sock), "pong:ping");
      await dumpAndKill(p.pid, p.status, img);

      u.sh(`cd ${u.dir} && mv sub sub.old && ln -s ${rootDir.dir} sub`);
      await refused(img, p.pid, /sub\/sock: cannot open its directory .*a symlink is on its path/);
      assertEquals(snap(rootSock), before, "root's socket file is still there, untouched");

      // Put back, the user's own socket comes back, the user's, working.
      u.sh(`cd ${u.dir} && rm sub && mv sub.old sub`);
      await restored(img, p.pid);
      assertEquals(await ping(sock), "pong:ping");
      const st = Deno.lstatSync(sock);
      assertEquals([st.uid, st.gid, st.mode! & 0o7777], [u.uid, u.gid, 0o660]);
      assertEquals(snap(rootSock), before);
    } finally {
      await killAndForget(p.pid);
      await Deno.remove(rootDir.dir, { recursive: true });
    }
  });
});

const ROUNDS = 10;

Deno.test("a bound socket's path swapped for a symlink while root restores it: root's file never changes owner or mode", async () => {
  await withUser(async (u) => {
    const secret = await rootSecret("secret", "ROOT-SECRET");
    const before = snap(secret.path);
    const sock = `${u.dir}/sock`;
    const p = startSession(userPython(u, SERVER, u.dir, sock));
    const img = await rootImages();
    let attacker: Deno.ChildProcess | undefined;
    const outcomes = { restored: 0, refused: 0 };
    try {
      await until("ready", () => readText(`${u.dir}/log`).includes("ready"));
      await dumpAndKill(p.pid, p.status, img);
      // The user watches the directory (inotify) and, the moment the
      // socket file is created, renames a symlink to root's file over it,
      // hoping to land between bind and the chown that follows.
      const [cmd, ...args] = u.as([`${WORKLOADS}/swapper`, u.dir, "sock", secret.path]);
      attacker = new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "null" })
        .spawn();
      await until("attacker armed", () => {
        try {
          Deno.statSync(`${u.dir}/armed`);
          return true;
        } catch {
          return false;
        }
      });
      for (let i = 0; i < ROUNDS; i++) {
        // The socket file the killed server left (stale), each round.
        let stale = false;
        try {
          stale = Deno.lstatSync(sock).isSocket === true;
        } catch { /* gone */ }
        if (!stale) {
          try {
            Deno.removeSync(sock);
          } catch { /* gone */ }
          // Made by the user (root would follow the attacker's symlinks),
          // and renamed into place: the attacker reacts to creations only.
          u.sh(
            `cd ${u.dir} && /usr/bin/python3 -c 'import socket; ` +
              `socket.socket(socket.AF_UNIX).bind("prep.sock")' && mv -f prep.sock sock`,
          );
        }
        const r = await runCkpt(["restore", "-D", img, "-d"]);
        if (r.code === 0) {
          outcomes.restored++;
          await killAndForget(p.pid);
        } else {
          outcomes.refused++;
          assertEquals(r.code, 1);
          assertMatch(r.stderr, /^ckpt: [^\n]*sock[^\n]*\n$/, "one line naming the socket");
          assert(gone(p.pid));
        }
        assertEquals(snap(secret.path), before, `root's file as it was (round ${i})`);
      }
    } finally {
      try {
        attacker?.kill("SIGKILL");
        await attacker?.status;
      } catch { /* gone */ }
      await killAndForget(p.pid);
      await Deno.remove(secret.dir, { recursive: true });
    }
    assertEquals(outcomes.restored + outcomes.refused, ROUNDS);
  });
});

Deno.test("UNIX sockets made for a user's task carry the user's credentials to their peers (SO_PEERCRED), never root's: a listener, a socketpair, a client reconnected to a root server outside", async () => {
  await withUser(async (u) => {
    const d = u.dir;
    // Outside the tree, run by root: a server that tells the uid of each
    // client that connects (SO_PEERCRED).
    const server = new Deno.Command("python3", {
      args: [
        "-c",
        `import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)
import os; os.chmod(sys.argv[1], 0o777)
while True:
    c, _ = s.accept()
    pid, uid, gid = struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    open(sys.argv[2], "a").write(f"{uid} {gid}\\n")`,
        `${d}/root.sock`,
        `${d}/root.log`,
      ],
      stdin: "null",
      stdout: "null",
    }).spawn();
    const prog = `import os, socket, struct, sys, time
d = sys.argv[1]
cred = lambda s: struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1:]
l = socket.socket(socket.AF_UNIX); l.bind(f"{d}/user.sock"); l.listen(4)
a, b = socket.socketpair()
c = socket.socket(socket.AF_UNIX); c.connect(f"{d}/root.sock")
open(f"{d}/ino", "w").write(str(os.fstat(c.fileno()).st_ino))
while not os.path.exists(f"{d}/go"):
    time.sleep(0.02)
x, _ = l.accept()
open(f"{d}/report", "w").write(f"pair {cred(a)} {cred(b)} accepted {cred(x)}\\n")
time.sleep(60)`;
    await until("the root server", () => {
      try {
        return Deno.statSync(`${d}/root.sock`).isSocket === true;
      } catch {
        return false;
      }
    });
    const p = startSession(userPython(u, prog, d));
    let pid = p.pid;
    try {
      await until("the user's tree ready", () => readText(`${d}/ino`) !== "");
      await until("its first connection seen", () => readText(`${d}/root.log`) !== "");
      const ino = readText(`${d}/ino`);
      const images = await rootImages();
      const r = await runCkpt(["dump", "-t", String(p.pid), "-D", images, `--ext-unix-sk=${ino}`]);
      assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
      await p.status;
      await until(`pid ${pid} free`, () => gone(pid));
      await restored(images, pid);
      // The client reconnected to the root server: seen as the user.
      await until("reconnected", () => readText(`${d}/root.log`).split("\n").length > 2);
      assertEquals(readText(`${d}/root.log`), `${u.uid} ${u.gid}\n${u.uid} ${u.gid}\n`);
      // Root connects to the restored listener: the listener is the user's.
      const check = new Deno.Command("python3", {
        args: [
          "-c",
          `import socket, struct, sys
c = socket.socket(socket.AF_UNIX); c.connect(sys.argv[1])
print(*struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1:])
open(sys.argv[2], "w").close()
c.recv(1)`,
          `${d}/user.sock`,
          `${d}/go`,
        ],
        stdout: "piped",
        stdin: "null",
      }).spawn();
      const reader = check.stdout.getReader();
      let seen = "";
      while (!seen.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += new TextDecoder().decode(value);
      }
      seen = seen.trim();
      reader.releaseLock();
      assertEquals(seen, `${u.uid} ${u.gid}`, "the restored listener is the user's");
      await until("the task's report", () => readText(`${d}/report`) !== "");
      assertEquals(
        readText(`${d}/report`),
        `pair (${u.uid}, ${u.gid}) (${u.uid}, ${u.gid}) accepted (0, 0)\n`,
        "the socketpair's ends see the user; the connection root made is root's",
      );
      check.kill("SIGKILL");
      await check.status;
      await check.stdout.cancel().catch(() => {});
    } finally {
      server.kill("SIGKILL");
      await server.status;
      await killAndForget(pid);
      pid = 0;
    }
  });
});
