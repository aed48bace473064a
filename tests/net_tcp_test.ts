// TCP sockets through dump and restore, with real programs: a listening
// python3 http.server, connections between two tasks of the tree carrying
// numbered lines with bytes in flight both ways, a client outside the tree
// that must see no error, half-closed connections, --tcp-close,
// --skip-in-flight, ckpt killed during a locked dump, and dump --stream into
// restore --stream.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { CKPT, runCkpt } from "./helpers/ckpt.ts";
import { tempUser } from "./helpers/user.ts";
import { InetTable, IPPROTO_TCP } from "../src/net/diag.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  startSession,
  tempDir,
  until,
} from "./helpers/proc.ts";
import {
  childrenOf,
  ckptTables,
  dropTables,
  ensureNft,
  fields,
  NET,
  shownFiles,
  signal,
  startPeer,
  stopPeer,
  waitFile,
} from "./helpers/net.ts";

async function httpGet(port: number): Promise<number> {
  const r = await fetch(`http://127.0.0.1:${port}/`);
  await r.body?.cancel();
  return r.status;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function dump(pid: number, status: Promise<unknown> | null, args: string[]) {
  const r = await runCkpt(["dump", "-t", String(pid), ...args]);
  assertEquals(r.code, 0, r.stderr);
  if (status) await status;
  await until(`pid ${pid} free`, () => gone(pid));
  return r;
}

async function restore(args: string[]) {
  const r = await runCkpt(["restore", "-d", ...args]);
  assertEquals(r.code, 0, r.stderr);
  return r;
}

Deno.test("python3 -m http.server on 127.0.0.1: dumped, restored, answers requests", async () => {
  const dir = await tempDir("http");
  const port = freePort();
  const s = startSession(["python3", "-m", "http.server", String(port), "--bind", "127.0.0.1"]);
  try {
    await until("http.server answers", () => httpGet(port).then((c) => c === 200, () => false));
    await dump(s.pid, s.status, ["-D", `${dir}/img`]);
    await restore(["-D", `${dir}/img`]);
    for (let i = 0; i < 3; i++) assertEquals(await httpGet(port), 200);
    assert(alive(s.pid));
  } finally {
    await killAndForget(s.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

for (const v of ["4", "6"]) {
  Deno.test(`loopback connection between two tasks (IPv${v}): numbered lines in flight both ways carry on, none lost or repeated`, async () => {
    await ensureNft();
    const dir = await tempDir(`pair${v}`);
    const s = startSession(["python3", `${NET}/tcp_pair.py`, dir, v]);
    let child = 0;
    try {
      await waitFile(`${dir}/client.status`);
      await waitFile(`${dir}/server.status`);
      child = childrenOf(s.pid)[0];
      const refused = await runCkpt(["dump", "-t", String(s.pid), "-D", `${dir}/no`]);
      assertEquals(refused.code, 1);
      for (const part of ["TCP connection", "--tcp-established", "peer inside the tree"]) {
        assertStringIncludes(refused.stderr, part);
      }
      assertMatch(
        refused.stderr,
        v === "4" ? /127\.0\.0\.1:\d+ → 127\.0\.0\.1:\d+/ : /\[::1\]:\d+ → \[::1\]:\d+/,
      );
      assert(alive(s.pid) && alive(child), "a refused dump leaves the tree running");
      const listed = await runCkpt(["sockets", "-t", String(s.pid), "--json"]);
      assertEquals(listed.code, 0, listed.stderr);
      const rep = JSON.parse(listed.stdout);
      const est = rep.net.filter((n: { state: string }) => n.state === "ESTABLISHED");
      assertEquals(est.length, 2);
      for (const n of est) {
        assertEquals([n.protocol, n.peerIs, n.need], [
          `TCP${v === "6" ? "6" : ""}`,
          "inside",
          "--tcp-established",
        ]);
      }
      assertEquals(rep.summary.dumpOptions, ["--tcp-established"]);

      // Both stop reading: each side's lines fill the other's receive
      // queue and its own send queue, sent and not yet sent.
      signal([s.pid, child], "SIGUSR1");
      await until(
        "both paused",
        () =>
          ["client", "server"].every((r) => fields(readText(`${dir}/${r}.status`)).paused === 1),
      );
      await new Promise((r) => setTimeout(r, 300));
      const before = ["client", "server"].map((r) => fields(readText(`${dir}/${r}.status`)));
      await dump(s.pid, s.status, ["-D", `${dir}/img`, "--tcp-established"]);
      const conns = (await shownFiles(runCkpt, `${dir}/img`))
        .map((f) => f.tcp as Record<string, Record<string, { bytes: number }>> | undefined)
        .filter((t) => t?.mode as unknown === "TCP_REPAIRED");
      assertEquals(conns.length, 2, "both ends saved as live connections");
      for (const t of conns) {
        const q = JSON.stringify({ ...t!.repair, recv_queue: undefined, send_queue: undefined });
        assert(t!.repair.recv_queue.bytes > 0, `bytes queued to read: ${q}`);
        assert(
          t!.repair.send_queue.bytes > 0,
          `bytes queued to send: ${q} ${JSON.stringify(before)}`,
        );
      }
      assertEquals((await ckptTables(s.pid)).length, 1, "locked until restore");

      const netstat = () =>
        new Map(
          Deno.readTextFileSync("/proc/net/netstat").split("\n").reduce(
            (acc: [string, number][], l, i, a) => {
              if (i % 2 === 1) {
                const k = a[i - 1].split(" "), v = l.split(" ");
                k.slice(1).forEach((n, j) => acc.push([`${k[0]}${n}`, Number(v[j + 1])]));
              }
              return acc;
            },
            [],
          ),
        );
      const ns0 = netstat();
      // Default options: the image says the connections were dumped live.
      await restore(["-D", `${dir}/img`]);
      assertEquals(await ckptTables(s.pid), [], "the lock is gone once the tree runs");
      signal([s.pid, child], "SIGUSR2");
      const status = () => ["client", "server"].map((r) => readText(`${dir}/${r}.status`));
      await until(
        "both carry on past what was queued",
        () =>
          ["client", "server"].every((r, i) => {
            const f = fields(readText(`${dir}/${r}.status`));
            return f.recv > before[1 - i].sent + 1000;
          }),
        20_000,
      ).catch((err) => {
        const ss = new Deno.Command("ss", { args: ["-tnoi"], stdout: "piped" }).outputSync();
        const ns1 = netstat();
        const delta = [...ns1].filter(([k, v]) => v !== ns0.get(k)).map(([k, v]) =>
          `${k}+${v - (ns0.get(k) ?? 0)}`
        );
        console.error("netstat deltas:", delta.join(" "));
        throw new Error(
          `${err.message}: now ${status().join(" / ")}, before ${JSON.stringify(before)}\n` +
            new TextDecoder().decode(ss.stdout).split("\n").filter((l, i, a) =>
              /\[::1\]|127\.0\.0\.1/.test(l) || /\[::1\]|127\.0\.0\.1/.test(a[i - 1] ?? "")
            ).join("\n"),
        );
      });
      for (const r of ["client", "server"]) {
        assertEquals(readText(`${dir}/${r}.error`), "", `${r} saw every line once, in order`);
        assertEquals(
          readText(`${dir}/${r}.opts`),
          readText(`${dir}/${r}.opts.before`),
          `${r}: nodelay, keepalive and its timers, linger, user timeout, both ports`,
        );
      }
    } finally {
      await killAndForget(s.pid);
      if (child) await killAndForget(child);
      await dropTables(s.pid);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

async function echoServer(dir: string, hold?: string) {
  const s = startSession([
    "python3",
    `${NET}/tcp_echo.py`,
    `${dir}/port`,
    ...(hold ? ["127.0.0.1", "0", hold] : []),
  ]);
  const port = Number(await waitFile(`${dir}/port`));
  return { s, port };
}

function counted(log: string): { ok: boolean; n: number; maxgap: number; text: string } {
  const text = readText(log).trim();
  const m = /^ok (\d+) maxgap_ms ([\d.]+)$/.exec(text);
  return { ok: !!m, n: m ? Number(m[1]) : -1, maxgap: m ? Number(m[2]) : -1, text };
}

Deno.test("a client outside the tree keeps its connection across dump and restore (--tcp-established): no error, no lost line", async () => {
  await ensureNft();
  const dir = await tempDir("outside");
  const { s, port } = await echoServer(dir);
  const log = `${dir}/client.log`;
  const client = startPeer("tcp_counter.py", ["127.0.0.1", String(port), log, "3"]);
  try {
    await until("client echoed", () => counted(log).n > 20);
    await dump(s.pid, s.status, ["-D", `${dir}/img`, "--tcp-established"]);
    const atDump = counted(log).n;
    await new Promise((r) => setTimeout(r, 500));
    assert(counted(log).ok, `no error while the server is gone: ${counted(log).text}`);
    assert(counted(log).n <= atDump + 1, "nothing answers while the connection is locked");
    await restore(["-D", `${dir}/img`, "--tcp-established"]);
    await until("echoes again", () => counted(log).n > atDump + 50, 15_000);
    assert(counted(log).ok, counted(log).text);
    assertEquals(await ckptTables(s.pid), []);
  } finally {
    await stopPeer(client);
    await killAndForget(s.pid);
    await dropTables(s.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a --tcp-established restore that fails leaves the connection locked and intact: the next restore carries it on", async () => {
  await ensureNft();
  const dir = await tempDir("failed-restore");
  const held = `${dir}/held`;
  await Deno.writeTextFile(held, "data");
  const { s, port } = await echoServer(dir, held);
  const log = `${dir}/client.log`;
  const client = startPeer("tcp_counter.py", ["127.0.0.1", String(port), log]);
  try {
    await until("client echoed", () => counted(log).n > 20);
    await dump(s.pid, s.status, ["-D", `${dir}/img`, "--tcp-established"]);
    // The file the server opened after its sockets changes: restore fails
    // once the connection is rebuilt.
    await Deno.writeTextFile(held, "data changed");
    const failed = await runCkpt(["restore", "-D", `${dir}/img`, "-d", "--tcp-established"]);
    assertEquals(failed.code, 1);
    assertStringIncludes(failed.stderr, "changed since the dump");
    assertStringIncludes(failed.stderr, "nft delete table inet ckpt-");
    assert(gone(s.pid), "nothing left running");
    assertEquals((await ckptTables(s.pid)).length, 1, "still locked");
    await new Promise((r) => setTimeout(r, 300));
    assert(counted(log).ok, `the client saw no reset: ${counted(log).text}`);
    await Deno.writeTextFile(held, "data");
    const at = counted(log).n;
    await restore(["-D", `${dir}/img`, "--tcp-established"]);
    await until("echoes again", () => counted(log).n > at + 50, 15_000);
    assert(counted(log).ok, counted(log).text);
  } finally {
    await stopPeer(client);
    await killAndForget(s.pid);
    await dropTables(s.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

for (const mode of ["client-first", "server-first"]) {
  Deno.test(`half-closed connection with unread data and a FIN (${mode}): both ends finish the exchange after restore`, async () => {
    await ensureNft();
    const dir = await tempDir(`half-${mode}`);
    const s = startSession(["python3", `${NET}/tcp_half.py`, dir, mode]);
    try {
      await waitFile(`${dir}/ready`, "half-closed");
      await dump(s.pid, s.status, ["-D", `${dir}/img`, "--tcp-established"]);
      const states = (await shownFiles(runCkpt, `${dir}/img`))
        .map((f) => (f.tcp as { state?: number; mode?: string } | undefined))
        .filter((t) => t?.mode === "TCP_REPAIRED").map((t) => t!.state).sort();
      assertEquals(states, [5, 8], "FIN_WAIT2 against CLOSE_WAIT");
      await restore(["-D", `${dir}/img`, "--tcp-established"]);
      await Deno.writeTextFile(`${dir}/go`, "");
      const client = await waitFile(`${dir}/client.done`, "client done");
      const server = await waitFile(`${dir}/server.done`, "server done");
      // What each must have read, whole, up to the end of file.
      const answer = Array.from({ length: 5000 }, (_, i) => `answer line ${i}\n`).join("");
      const request = Array.from({ length: 3000 }, (_, i) => `request line ${i}\n`).join("");
      const sha = async (t: string) =>
        [...new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(t)))]
          .map((b) => b.toString(16).padStart(2, "0")).join("");
      assertEquals(client, `ok ${answer.length} ${await sha(answer)}`);
      assertEquals(server, `ok ${request.length} ${await sha(request)}`);
    } finally {
      await killAndForget(s.pid);
      await dropTables(s.pid);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("--tcp-close: connections come back reset (the program sees ECONNRESET), restored with default options", async () => {
  const dir = await tempDir("tcpclose");
  const s = startSession(["python3", `${NET}/tcp_pair.py`, dir]);
  let child = 0;
  try {
    await waitFile(`${dir}/client.status`);
    child = childrenOf(s.pid)[0];
    await dump(s.pid, s.status, ["-D", `${dir}/img`, "--tcp-close"]);
    assertEquals(await ckptTables(s.pid), [], "nothing locked");
    await restore(["-D", `${dir}/img`]);
    for (const r of ["client", "server"]) {
      const e = await waitFile(`${dir}/${r}.error`, `${r} sees the reset`);
      assertMatch(e, /Connection reset by peer|Errno 104/);
    }
  } finally {
    await killAndForget(s.pid);
    if (child) await killAndForget(child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a connection not accepted yet: named at dump; --skip-in-flight leaves it and the listener works after", async () => {
  const dir = await tempDir("inflight");
  // The server never accepts: a stopped echo server is a listener with a backlog.
  const { s, port } = await echoServer(dir);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    Deno.kill(s.pid, "SIGSTOP");
    const other = await Deno.connect({ hostname: "127.0.0.1", port });
    const local = (other.localAddr as Deno.NetAddr).port;
    const r = await runCkpt(["dump", "-t", String(s.pid), "-D", `${dir}/no`]);
    assertEquals(r.code, 1);
    for (const part of ["not accepted yet", `127.0.0.1:${local}`, "--skip-in-flight"]) {
      assertStringIncludes(r.stderr, part);
    }
    await dump(s.pid, s.status, ["-D", `${dir}/img`, "--skip-in-flight", "--tcp-close"]);
    // The accepted connection, dumped with --tcp-close: its peer sees a reset.
    const err = await conn.read(new Uint8Array(16)).then(() => null, (e) => e);
    assert(err instanceof Deno.errors.ConnectionReset, `a reset, not ${err}`);
    other.close();
    await restore(["-D", `${dir}/img`, "--tcp-close"]);
    Deno.kill(s.pid, "SIGCONT");
    const c2 = await Deno.connect({ hostname: "127.0.0.1", port });
    await c2.write(new TextEncoder().encode("ping"));
    const buf = new Uint8Array(4);
    assertEquals(await c2.read(buf), 4);
    assertEquals(new TextDecoder().decode(buf), "ping");
    c2.close();
  } finally {
    try {
      conn.close();
    } catch { /* reset */ }
    await killAndForget(s.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ckpt killed during a --tcp-established dump leaves no lock and the tree's connections working", async () => {
  await ensureNft();
  const dir = await tempDir("killed");
  const s = startSession(["python3", `${NET}/tcp_pair.py`, dir]);
  let child = 0;
  try {
    await waitFile(`${dir}/client.status`);
    child = childrenOf(s.pid)[0];
    for (const point of ["frozen", "collected"]) {
      const ckptLog = `${dir}/ckpt-${point}.log`;
      const p = new Deno.Command(CKPT, {
        args: [
          "dump",
          "-t",
          String(s.pid),
          "-D",
          `${dir}/img-${point}`,
          "--tcp-established",
          "-v2",
          "--log-file",
          ckptLog,
        ],
        env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1", CKPT_FAULT_PAUSE: point },
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      await until(`fault point ${point}`, () => readText(ckptLog).includes(`fault point ${point}`));
      if (point === "collected") {
        assertEquals((await ckptTables(s.pid)).length, 1, "locked while collected");
      }
      p.kill("SIGKILL");
      await p.status;
      await until("the lock is gone", async () => (await ckptTables(s.pid)).length === 0);
      const before = ["client", "server"].map((r) => fields(readText(`${dir}/${r}.status`)));
      await until(
        `the tree carries on after a kill at ${point}`,
        () =>
          ["client", "server"].every((r, i) =>
            fields(readText(`${dir}/${r}.status`)).recv > before[i].recv + 1000
          ),
      );
      for (const r of ["client", "server"]) assertEquals(readText(`${dir}/${r}.error`), "");
    }
  } finally {
    await killAndForget(s.pid);
    if (child) await killAndForget(child);
    await dropTables(s.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dump --stream | restore --stream with --tcp-established keeps an outside client's connection", async () => {
  await ensureNft();
  const dir = await tempDir("stream");
  const { s, port } = await echoServer(dir);
  const log = `${dir}/client.log`;
  const client = startPeer("tcp_counter.py", ["127.0.0.1", String(port), log]);
  try {
    await until("client echoed", () => counted(log).n > 20);
    const env = { DENO_BIN: Deno.execPath(), NO_COLOR: "1" };
    const pipe = new Deno.Command("bash", {
      args: [
        "-c",
        `set -o pipefail; "${CKPT}" dump -t ${s.pid} --stream --tcp-established | ` +
        `"${CKPT}" restore --stream --tcp-established -d`,
      ],
      env,
      stdout: "piped",
      stderr: "piped",
    });
    const out = await pipe.output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    await s.status;
    const at = counted(log).n;
    await until("echoes again after the migration", () => counted(log).n > at + 50, 15_000);
    assert(counted(log).ok, counted(log).text);
    assertEquals(await ckptTables(s.pid), []);
  } finally {
    await stopPeer(client);
    await killAndForget(s.pid);
    await dropTables(s.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a user's server and its live connection are restored as that user's sockets (uid in sock_diag), answering as before", async () => {
  await ensureNft();
  const u = await tempUser();
  const dir = u.dir;
  const s = startSession(u.as(["/usr/bin/python3", `${NET}/tcp_echo.py`, `${dir}/port`]));
  const log = `${dir}/client.log`;
  let client: Deno.ChildProcess | undefined;
  try {
    const port = Number(await waitFile(`${dir}/port`));
    client = startPeer("tcp_counter.py", ["127.0.0.1", String(port), log]);
    await until("client echoed", () => counted(log).n > 20);
    const owners = () =>
      new InetTable([IPPROTO_TCP]).all.filter((d) =>
        ((d.local[2] << 8) | d.local[3]) === port && d.inode !== 0
      ).map((d) => d.uid).filter((uid, i, a) => a.indexOf(uid) === i);
    assertEquals(owners(), [u.uid], "the user's listener and connection, before");
    // The images go to root's own directory (one of the user's would not be trusted).
    const img = `${await tempDir("user-img")}/img`;
    await dump(s.pid, s.status, ["-D", img, "--tcp-established"]);
    await restore(["-D", img, "--tcp-established"]);
    await Deno.remove(img.replace(/\/img$/, ""), { recursive: true });
    const at = counted(log).n;
    await until("echoes again", () => counted(log).n > at + 20, 15_000);
    assert(counted(log).ok, counted(log).text);
    assertEquals(owners(), [u.uid], "and after: made as the user, not as root");
  } finally {
    await stopPeer(client);
    await killAndForget(s.pid);
    await dropTables(s.pid);
    await u.remove();
  }
});
