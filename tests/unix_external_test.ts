// UNIX sockets whose peer is outside the dumped process: real outside servers
// (python3), real clients dumped and restored, and what each side sees after.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { CKPT, runCkpt } from "./helpers/ckpt.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  type Started,
  startSession,
  tempDir,
  until,
} from "./helpers/proc.ts";
import { PEERS, startPython, stopPython } from "./helpers/peers.ts";

type Kind = "stream" | "seqpacket" | "dgram";

/** The server creates its log once it is bound (and listening). */
function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function startServer(kind: Kind, path: string, log: string): Deno.ChildProcess {
  return new Deno.Command("python3", {
    args: [`${PEERS}unix_server.py`, kind, path, log],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
}

async function stopServer(s: Deno.ChildProcess | undefined) {
  if (!s) return;
  try {
    s.kill("SIGKILL");
  } catch { /* gone */ }
  await s.status;
}

function startClient(kind: Kind, path: string, dir: string): Started {
  return startSession([
    "python3",
    `${PEERS}unix_client.py`,
    kind,
    path,
    `${dir}/client.json`,
    `${dir}/client.log`,
  ]);
}

/** Numbers the server got, per connection. */
function received(log: string): { conn: number; n: number }[] {
  return readText(log).split("\n").filter(Boolean).map((l) => {
    const [c, n] = l.split(" ");
    return { conn: Number(c), n: Number(n) };
  });
}

const lastSent = (dir: string) =>
  Math.max(
    0,
    ...readText(`${dir}/client.log`).split("\n").filter((l) => l.startsWith("sent "))
      .map((l) => Number(l.slice(5))),
  );

/** Socket inode the client holds now (a restored socket has a new one). */
function clientIno(pid: number, fd: number): number {
  return Number(/socket:\[(\d+)\]/.exec(Deno.readLinkSync(`/proc/${pid}/fd/${fd}`))![1]);
}

async function dumpKilled(pid: number, status: Promise<unknown> | null, args: string[]) {
  const r = await runCkpt(["dump", "-t", String(pid), ...args]);
  assertEquals(r.code, 0, r.stderr);
  if (status) await status;
  await until(`pid ${pid} free`, () => gone(pid));
}

Deno.test("logd: a one-way DGRAM client of an outside server, refused without --ext-unix-sk at dump, reconnected at restore with default options and with it", async () => {
  const dir = await tempDir("logd");
  const path = `${dir}/log.sock`, log = `${dir}/server.log`;
  const server = startServer("dgram", path, log);
  let c: Started | undefined;
  try {
    await until("server bound", () => exists(log));
    c = startClient("dgram", path, dir);
    await until("client sending", () => received(log).length >= 3);
    const { fd, ino } = JSON.parse(readText(`${dir}/client.json`));

    const refused = await runCkpt(["dump", "-t", String(c.pid), "-D", `${dir}/no`]);
    assertEquals(refused.code, 1);
    assertMatch(refused.stderr, /^ckpt: unix dgram socket \d+ .*\n$/);
    for (const part of [String(ino), `fd ${fd}`, path, "--ext-unix-sk"]) {
      assertStringIncludes(refused.stderr, part);
    }
    const n = received(log).length;
    await until("the client carries on", () => received(log).length > n + 2);

    await dumpKilled(c.pid, c.status, ["-D", `${dir}/images`, "--ext-unix-sk"]);
    const last = lastSent(dir);
    // Default options: the dump's --ext-unix-sk said the server will be there.
    const plain = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(plain.code, 0, plain.stderr);
    await until("datagrams after restore", () => received(log).some((m) => m.n > last + 3));
    assert(received(log).some((m) => m.n === last + 1), "it carries on from where it was");
    await killAndForget(c.pid);
    const seen = (n: number) => received(log).filter((m) => m.n === n).length;
    const once = seen(last + 3);

    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d", "--ext-unix-sk"]);
    assertEquals(r.code, 0, r.stderr);
    await until("the same datagrams again", () => seen(last + 3) > once);
  } finally {
    if (c) await killAndForget(c.pid);
    await stopServer(server);
    await Deno.remove(dir, { recursive: true });
  }
});

for (const kind of ["stream", "seqpacket"] as const) {
  Deno.test(`${kind} client of an outside server: --ext-unix-sk=ID, reconnected to a restarted server and to a new path`, async () => {
    const dir = await tempDir(`ext-${kind}`);
    const path = `${dir}/srv.sock`, log = `${dir}/server.log`;
    let server: Deno.ChildProcess | undefined = startServer(kind, path, log);
    let c: Started | undefined;
    try {
      await until("server listening", () => exists(log));
      c = startClient(kind, path, dir);
      await until("client sending", () => received(log).length >= 3);
      const { pid, fd, ino } = JSON.parse(readText(`${dir}/client.json`));

      const refused = await runCkpt(["dump", "-t", String(pid), "-D", `${dir}/no`]);
      assertEquals(refused.code, 1);
      assertStringIncludes(refused.stderr, `unix ${kind} socket ${ino}`);
      assertStringIncludes(refused.stderr, path);
      assertStringIncludes(refused.stderr, `--ext-unix-sk=${ino}`);
      assert(alive(pid), "a refused dump leaves the client running");

      await dumpKilled(pid, c.status, ["-D", `${dir}/img1`, `--ext-unix-sk=${ino}`]);
      // The server is restarted at the same path.
      await stopServer(server);
      await Deno.remove(log);
      server = startServer(kind, path, log);
      await until("server back", () => exists(log));
      let last = lastSent(dir);
      const r1 = await runCkpt(["restore", "-D", `${dir}/img1`, "-d", `--ext-unix-sk=${ino}`]);
      assertEquals(r1.code, 0, r1.stderr);
      await until("writes reach the restarted server", () => received(log).some((m) => m.n > last));
      // The log may trail the socket by the one send the freeze fell after.
      assert(
        [last + 1, last + 2].includes(received(log)[0].n),
        `the next message (${last + 1}, or ${
          last + 2
        } if frozen between send and log) is the first the server gets, not ${received(log)[0].n}`,
      );

      // Again, to a server at a new path.
      const ino2 = clientIno(pid, fd);
      await dumpKilled(pid, null, ["-D", `${dir}/img2`, `--ext-unix-sk=${ino2}`]);
      const path2 = `${dir}/moved.sock`, log2 = `${dir}/server2.log`;
      const server2 = startServer(kind, path2, log2);
      try {
        await until("new server", () => exists(log2));
        last = lastSent(dir);
        const r2 = await runCkpt([
          "restore",
          "-D",
          `${dir}/img2`,
          "-d",
          `--ext-unix-sk=${ino2}=${path2}`,
        ]);
        assertEquals(r2.code, 0, r2.stderr);
        await until("writes reach the new path", () => received(log2).some((m) => m.n > last));
        assert([last + 1, last + 2].includes(received(log2)[0].n), `first: ${received(log2)[0].n}`);
      } finally {
        await stopServer(server2);
      }
    } finally {
      if (c) await killAndForget(c.pid);
      await stopServer(server);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("socketpair end held by a child, other end with its undumped parent: --external unix[ID], --inherit-fd", async () => {
  const dir = await tempDir("ext-pair");
  const parent = startPython("unix_pair_parent.py", [dir]);
  let child = 0;
  try {
    const { child: pid, ino } = await parent.next<{ child: number; ino: number }>();
    child = pid;
    assertEquals((await parent.next<{ reply: string }>()).reply, "echo:hello");

    const refused = await runCkpt(["dump", "-t", String(child), "-D", `${dir}/no`]);
    assertEquals(refused.code, 1);
    assertStringIncludes(refused.stderr, `unix stream socket ${ino}`);
    assertStringIncludes(refused.stderr, "(nameless)");
    assertStringIncludes(refused.stderr, `--external unix[${ino}]`);
    assertStringIncludes(refused.stderr, `--inherit-fd fd[N]:socket:[${ino}]`);

    await dumpKilled(child, null, ["-D", `${dir}/images`, "--external", `unix[${ino}]`]);
    // Default options: it comes back, its peer gone, and is told how else.
    const without = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(without.code, 0, without.stderr);
    assertStringIncludes(without.stderr, `restored as a socket whose peer is gone`);
    assertStringIncludes(without.stderr, `--inherit-fd fd[N]:socket:[${ino}]`);
    assert(alive(child), "restored");
    await killAndForget(child);

    // A socket of another type in its place is refused (exit 2, one line).
    const wrong = new Deno.Command("python3", {
      args: [
        "-c",
        `import os, socket, subprocess, sys
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
os.dup2(a.fileno(), 5)
r = subprocess.run([sys.argv[1], "restore", "-D", sys.argv[2], "-d", "--inherit-fd",
                    "fd[5]:socket:[" + sys.argv[3] + "]"], pass_fds=[5], capture_output=True)
sys.stdout.write(str(r.returncode) + " " + r.stderr.decode())`,
        CKPT,
        `${dir}/images`,
        String(ino),
      ],
      env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1" },
      stdout: "piped",
    });
    const w = new TextDecoder().decode((await wrong.output()).stdout);
    assertMatch(w, /^2 ckpt: [^\n]*fd 5 is a UNIX dgram socket, not a UNIX stream socket\n$/);

    const helper = new Deno.Command("python3", {
      args: [`${PEERS}unix_inherit.py`, CKPT, `${dir}/images`, String(ino)],
      env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1" },
      stdout: "piped",
      stderr: "inherit",
    });
    const out = JSON.parse(new TextDecoder().decode((await helper.output()).stdout));
    assertEquals(out.code, 0, out.stderr);
    assertEquals(out.reply, "echo:ping", "the restored child answers on the inherited socket");
    assertEquals(readText(`${dir}/child.log`), "hello\nping\n");
  } finally {
    if (child) await killAndForget(child);
    await stopPython(parent);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("missing outside peer: restore fails cleanly by default; =disconnected restores a socket whose peer is gone", async () => {
  const dir = await tempDir("ext-missing");
  const path = `${dir}/log.sock`, log = `${dir}/server.log`;
  let server: Deno.ChildProcess | undefined = startServer("dgram", path, log);
  let c: Started | undefined;
  try {
    await until("server bound", () => exists(log));
    c = startClient("dgram", path, dir);
    await until("client sending", () => received(log).length >= 2);
    const { ino } = JSON.parse(readText(`${dir}/client.json`));
    await dumpKilled(c.pid, c.status, ["-D", `${dir}/images`, "--ext-unix-sk"]);
    await stopServer(server);
    server = undefined;
    await Deno.remove(path);

    const failed = await runCkpt(["restore", "-D", `${dir}/images`, "-d", "--ext-unix-sk"]);
    assertEquals(failed.code, 1);
    assertMatch(failed.stderr, /^ckpt: [^\n]*\n$/);
    for (const part of [`socket ${ino}`, path, `--ext-unix-sk=${ino}=disconnected`]) {
      assertStringIncludes(failed.stderr, part);
    }
    assert(gone(c.pid), "nothing half-restored");

    const r = await runCkpt([
      "restore",
      "-D",
      `${dir}/images`,
      "-d",
      `--ext-unix-sk=${ino}=disconnected`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    await until(
      "the restored client sees the error",
      () => readText(`${dir}/client.log`).includes("error ConnectionRefusedError"),
    );
    assert(alive(c.pid), "and carries on running");
    await killAndForget(c.pid);

    // The global form does the same for every missing peer.
    const g = await runCkpt([
      "restore",
      "-D",
      `${dir}/images`,
      "-d",
      "--ext-unix-sk",
      "--ext-unix-sk-missing=disconnect",
    ]);
    assertEquals(g.code, 0, g.stderr);
    assert(alive(c.pid));
  } finally {
    if (c) await killAndForget(c.pid);
    await stopServer(server);
    await Deno.remove(dir, { recursive: true });
  }
});
