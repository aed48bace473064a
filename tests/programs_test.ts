// Everyday servers, each dumped and restored while serving on a UNIX
// socket, then checked by what it answers: the state it had (keys, counts)
// and that its timers still run. Programs a test needs are installed from
// Debian when missing (CI starts on an empty machine).
import { assert, assertEquals, assertMatch } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { ensureProgram } from "./helpers/packages.ts";
import { alive, gone, killAndForget, startSession, tempDir, until } from "./helpers/proc.ts";

const PROGRAMS = new URL("./programs/", import.meta.url).pathname;
const enc = new TextEncoder(), dec = new TextDecoder();

/** Sends `request` on the UNIX socket at path; the reply up to `end` (or
 * until the server closes the connection). */
async function ask(path: string, request: string, end?: RegExp): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    await conn.write(enc.encode(request));
    let out = "";
    const buf = new Uint8Array(4096);
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const n = await conn.read(buf);
      if (n === null) break;
      out += dec.decode(buf.subarray(0, n));
      if (end?.test(out)) break;
    }
    return out;
  } finally {
    conn.close();
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Runs argv as a session leader until `sock` exists, checks `before`,
 * dumps it (killed), restores it, and checks `after`. */
async function serveDumpRestore(
  name: string,
  argv: (dir: string) => string[],
  before: (sock: string) => Promise<void>,
  after: (sock: string) => Promise<void>,
): Promise<void> {
  const dir = await tempDir(name);
  const sock = `${dir}/sock`;
  const p = startSession(argv(dir));
  try {
    await until(`${name} listening`, () => exists(sock), 20_000);
    await before(sock);
    const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(d.code, 0, `dump of ${name} failed: ${d.stderr}`);
    await p.status;
    await until(`pid ${p.pid} free`, () => gone(p.pid));
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, `restore of ${name} failed: ${r.stderr}`);
    assert(alive(p.pid), `${name} runs after restore`);
    await after(sock);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
}

/** "requests=N ticks=M" → [N, M]. */
function counts(reply: string, what: string): [number, number] {
  const m = new RegExp(`${what}=(\\d+) ticks=(\\d+)`).exec(reply);
  assert(m, `unexpected reply: ${JSON.stringify(reply)}`);
  return [Number(m[1]), Number(m[2])];
}

/** Counters kept across the restore: the count goes on from where it was,
 * and the ticker still ticks. */
function countingServer(what: string, request: string) {
  let last: [number, number] = [0, 0];
  return {
    before: async (sock: string) => {
      await ask(sock, request);
      await new Promise((r) => setTimeout(r, 100));
      last = counts(await ask(sock, request), what);
      assertEquals(last[0], 2);
      assert(last[1] > 0, "the ticker runs before the dump");
    },
    after: async (sock: string) => {
      const now = counts(await ask(sock, request), what);
      assertEquals(now[0], last[0] + 1, "the count carries on from where it was");
      assert(now[1] >= last[1], "ticks are not lost");
      await until("ticks after restore", async () => {
        const later = counts(await ask(sock, request), what);
        return later[1] > now[1] + 2;
      });
    },
  };
}

Deno.test("redis-server on a UNIX socket: keys set before the dump read back, and it serves on", async () => {
  const redis = await ensureProgram("redis-server", "redis-server");
  const ping = (sock: string, cmd: string) => ask(sock, `${cmd}\r\n`, /\r\n$/);
  await serveDumpRestore(
    "redis",
    (
      dir,
    ) => [redis, "--port", "0", "--unixsocket", `${dir}/sock`, "--save", "", "--appendonly", "no"],
    async (sock) => {
      assertEquals(await ping(sock, "SET before kept"), "+OK\r\n");
      assertEquals(await ping(sock, "RPUSH list a b c"), ":3\r\n");
    },
    async (sock) => {
      assertEquals(await ping(sock, "GET before"), "$4\r\nkept\r\n");
      assertEquals(await ping(sock, "LLEN list"), ":3\r\n");
      assertEquals(await ping(sock, "SET after new"), "+OK\r\n");
      assertEquals(await ping(sock, "GET after"), "$3\r\nnew\r\n");
    },
  );
});

Deno.test("memcached on a UNIX socket (-s): items stored before the dump are served after", async () => {
  const memcached = await ensureProgram("memcached", "memcached");
  await serveDumpRestore(
    "memcached",
    (dir) => [memcached, "-u", "root", "-s", `${dir}/sock`, "-t", "2"],
    async (sock) => {
      assertEquals(await ask(sock, "set k 0 0 4\r\nkept\r\n", /\r\n$/), "STORED\r\n");
    },
    async (sock) => {
      assertEquals(await ask(sock, "get k\r\n", /END\r\n$/), "VALUE k 0 4\r\nkept\r\nEND\r\n");
      assertEquals(await ask(sock, "incr n 1\r\n", /\r\n$/), "NOT_FOUND\r\n");
      assertEquals(await ask(sock, "set n 0 0 1\r\n5\r\n", /\r\n$/), "STORED\r\n");
      assertEquals(await ask(sock, "incr n 2\r\n", /\r\n$/), "7\r\n");
    },
  );
});

Deno.test("node net server on a UNIX socket with a setInterval ticker: counts carry on", async () => {
  const node = await ensureProgram("node", "nodejs");
  const c = countingServer("requests", "hello");
  await serveDumpRestore(
    "node",
    (dir) => [node, `${PROGRAMS}netsrv.js`, `${dir}/sock`],
    c.before,
    c.after,
  );
});

Deno.test("Go HTTP server on a UNIX socket (stdlib) with a ticker goroutine: hits carry on", async () => {
  const go = await ensureProgram("go", "golang-go");
  const dir = await tempDir("gobuild");
  try {
    const build = await new Deno.Command(go, {
      args: ["build", "-o", `${dir}/httpsrv`, "."],
      cwd: PROGRAMS,
      // A cache kept between runs: a cold build of net/http takes ~25 s here.
      env: {
        GOCACHE: `${Deno.env.get("HOME") ?? "/root"}/.cache/ckpt-tests/go-build`,
        GOFLAGS: "-mod=mod",
        GOTOOLCHAIN: "local",
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(build.success, `go build failed: ${dec.decode(build.stderr)}`);
    const c = countingServer("hits", "GET / HTTP/1.0\r\n\r\n");
    await serveDumpRestore("go", (d) => [`${dir}/httpsrv`, `${d}/sock`], c.before, c.after);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("python asyncio UNIX server with a periodic task: counts carry on", async () => {
  const c = countingServer("requests", "hello");
  await serveDumpRestore(
    "asyncio",
    (dir) => ["python3", `${PROGRAMS}asyncsrv.py`, `${dir}/sock`],
    c.before,
    c.after,
  );
});

Deno.test("dump --dry-run of an interpreter says what it would save, writes nothing, leaves it running", async () => {
  const dir = await tempDir("dryrun");
  const p = startSession(["python3", "-c", "import time\nwhile True: time.sleep(0.05)"]);
  try {
    await until("python up", () => alive(p.pid));
    const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`, "--dry-run"]);
    assertEquals(d.code, 0, d.stderr);
    assertMatch(d.stdout, /would save 1 task\(s\)/);
    assertMatch(d.stdout, /nothing blocks the dump/);
    assert(!exists(`${dir}/images`), "nothing written");
    assert(alive(p.pid));
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
