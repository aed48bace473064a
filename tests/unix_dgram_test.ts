// Datagram sockets restored as the kernel had them, never by a guess: a
// socket connected to its own name, and a message with a descriptor queued
// by a socketpair end that has since closed.
import { assert, assertEquals } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { gone, killAndForget, readText, startSession, tempDir, until } from "./helpers/proc.ts";
import { PEERS } from "./helpers/peers.ts";

Deno.test("dgram: connected to its own name; a descriptor queued by a closed socketpair end", async () => {
  const dir = await tempDir("unix-dgram");
  const p = startSession([
    "sh",
    "-c",
    `exec python3 ${PEERS}unix_dgram_edges.py ${dir} 2>${dir}/err`,
  ]);
  try {
    await until("sockets set up", () => readText(`${dir}/before.json`) !== "");
    const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(d.code, 0, d.stderr);
    await p.status;
    await until("pid free", () => gone(p.pid));
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assert(!/dropped/.test(r.stderr), `nothing dropped: ${r.stderr}`);
    await Deno.writeTextFile(`${dir}/go`, "");
    await until("restored process reports", () => readText(`${dir}/after.json`) !== "");
    const a = JSON.parse(readText(`${dir}/after.json`));
    assertEquals(a.self_queued, "to-myself");
    assertEquals(a.self_again, "again", "still connected to its own name");
    assertEquals(a.self_peer, `${dir}/self.sock`);
    assertEquals(a.carrier, "carrier");
    assertEquals(a.carried, "through-a-dead-peer", "the descriptor in flight works");
    assertEquals(a.dead_send, "ConnectionRefusedError", "its peer is still gone");
    assertEquals(readText(`${dir}/err`), "");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
