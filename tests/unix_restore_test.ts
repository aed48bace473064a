// UNIX sockets whose both ends are inside the dumped process, restored
// exactly and checked by what the restored process itself reads.
import { assert, assertEquals } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { gone, killAndForget, readText, startSession, tempDir, until } from "./helpers/proc.ts";
import { PEERS } from "./helpers/peers.ts";

Deno.test("inside sockets: pairs of each type with queues both ways, listener with pending connections, names, options, fds in flight", async () => {
  const dir = await tempDir("unix-inside");
  const abstract = `ckpt-test-${crypto.randomUUID().slice(0, 8)}`;
  const p = startSession([
    "sh",
    "-c",
    `exec python3 ${PEERS}unix_inside.py ${dir} ${abstract} 2>${dir}/err`,
  ]);
  try {
    await until("sockets set up", () => readText(`${dir}/before.json`) !== "");
    const before = JSON.parse(readText(`${dir}/before.json`));
    const d = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(d.code, 0, d.stderr);
    await p.status;
    await until("pid free", () => gone(p.pid));
    // The dumped task was killed: its socket files stay behind, as they would.
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    await Deno.writeTextFile(`${dir}/go`, "");
    await until("restored process reports", () => readText(`${dir}/after.json`) !== "");
    const a = JSON.parse(readText(`${dir}/after.json`));
    assertEquals(a.pid, p.pid);
    // Stream, seqpacket and dgram pairs: queued data both ways, boundaries kept.
    assertEquals(a.s2, "to-s2-1to-s2-2");
    assertEquals(a.s1, "to-s1");
    assertEquals(a.q2, ["m1", "m2"]);
    assertEquals(a.q1, ["back"]);
    assertEquals(a.d2, ["x", "yy"]);
    assertEquals(a.d1, ["z"]);
    assertEquals(a.s2_new, "new", "the pair still works both ways");
    // shutdown(SHUT_WR) on one end: the other reads what was queued, then EOF.
    assertEquals(a.h2, ["last", "EOF"]);
    assertEquals(a.h1_send, "BrokenPipeError");
    // Options and descriptor flags.
    assertEquals(a.passcred, 1);
    assertEquals(a.rcvbuf, before.rcvbuf);
    assertEquals(a.peek_off, 3);
    assertEquals(a.s2_nonblock, true);
    assertEquals(a.s1_cloexec, false);
    assertEquals(a.s2_cloexec, true);
    // A listener with two connections waiting in accept(), in their order.
    assertEquals(a.accepted, ["hello1", "hello2"]);
    assertEquals(a.listen_mode, 0o640, "socket file mode");
    assertEquals(a.listen_owner, [1234, 5678], "socket file owner");
    // Names: abstract, and a path unlinked while bound.
    assertEquals(a.abstract, `\u0000${abstract}`);
    assertEquals(a.unlinked_name, `${dir}/unlinked.sock`);
    assertEquals(a.unlinked_exists, false);
    // Datagrams from two senders keep their sender addresses and order.
    assertEquals(a.r, [
      ["from-a", `${dir}/a.sock`],
      ["from-b", `${dir}/b.sock`],
      ["from-a2", `${dir}/a.sock`],
    ]);
    // Descriptors in flight: a pipe end with bytes in it, and a socket with
    // its own queued message whose peer is still held by the process.
    assertEquals(a.fd_msg, "fd");
    assertEquals(a.fd_data, "pipe-data");
    assertEquals(a.sk_msg, "sk");
    assertEquals(a.sk_inner, "inner");
    assertEquals(a.sk_fresh, "fresh");
    assert(readText(`${dir}/err`) === "", readText(`${dir}/err`));
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
