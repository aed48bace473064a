// redis-server (from Debian) with a client outside the tree sending
// commands in a loop across dump and restore (--tcp-established): the client
// never sees an error, every reply arrives, keys set before the dump read
// back after. redis needs epoll (another kind of file) to be dumped at all.
import { assert, assertEquals } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { gone, killAndForget, readText, startSession, tempDir, until } from "./helpers/proc.ts";
import { ensureProgram } from "./helpers/packages.ts";
import { ckptTables, dropTables, ensureNft, startPeer, stopPeer } from "./helpers/net.ts";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function progress(log: string): { ok: boolean; n: number; text: string } {
  const text = readText(log).trim();
  const m = /^ok (\d+) /.exec(text);
  return { ok: !!m, n: m ? Number(m[1]) : -1, text };
}

/** One command on a fresh connection; the raw reply. */
async function redis(port: number, ...args: string[]): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const req = `*${args.length}\r\n` + args.map((a) => `$${a.length}\r\n${a}\r\n`).join("");
    await c.write(new TextEncoder().encode(req));
    const buf = new Uint8Array(4096);
    let out = "";
    while (!/\r\n$/.test(out) || (out.startsWith("$") && out.split("\r\n").length < 3)) {
      const n = await c.read(buf);
      if (n === null) break;
      out += new TextDecoder().decode(buf.subarray(0, n));
    }
    return out;
  } finally {
    c.close();
  }
}

Deno.test("redis-server with an outside client looping over SET/INCR across dump and restore (--tcp-established)", async () => {
  const server = await ensureProgram("redis-server", "redis-server");
  await ensureNft();
  const dir = await tempDir("redis");
  const port = freePort();
  const s = startSession([
    server,
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
  ]);
  const log = `${dir}/client.log`;
  let client: Deno.ChildProcess | undefined;
  try {
    await until(
      "redis answers",
      () => redis(port, "PING").then((r) => r === "+PONG\r\n", () => false),
    );
    assertEquals(await redis(port, "SET", "before", "dump"), "+OK\r\n");
    client = startPeer("redis_loop.py", ["127.0.0.1", String(port), log]);
    await until("the client loops", () => progress(log).n > 50);
    const d = await runCkpt(["dump", "-t", String(s.pid), "-D", `${dir}/img`, "--tcp-established"]);
    assertEquals(d.code, 0, d.stderr);
    await s.status;
    await until(`pid ${s.pid} free`, () => gone(s.pid));
    const at = progress(log).n;
    const r = await runCkpt(["restore", "-D", `${dir}/img`, "-d", "--tcp-established"]);
    assertEquals(r.code, 0, r.stderr);
    await until("the client carries on", () => progress(log).n > at + 200, 20_000);
    assert(progress(log).ok, `the client saw no error: ${progress(log).text}`);
    assertEquals(await redis(port, "GET", "before"), "$4\r\ndump\r\n");
    assertEquals(await redis(port, "GET", "k:10"), "$2\r\n10\r\n");
    assertEquals(await ckptTables(s.pid), []);
  } finally {
    await stopPeer(client);
    await killAndForget(s.pid);
    await dropTables(s.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
