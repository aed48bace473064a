import { assert, assertEquals } from "../src/deps/std_assert.ts";
import { parseUnixDiag, readUnixSocket, readUnixSockets, SHUT_WR } from "../src/unix/diag.ts";
import { socketFds } from "../src/unix/inventory.ts";
import { startPython, stopPython } from "./helpers/peers.ts";

Deno.test("sock_diag describes a real process's UNIX sockets", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckpt-diag-" });
  const abstract = `ckpt-test-${crypto.randomUUID()}`;
  const py = startPython("unix_holder.py", [dir, abstract]);
  try {
    const fds = await py.next<Record<string, number>>();
    const byFd = new Map(socketFds(py.child.pid).map((s) => [s.fd, s.inode]));
    const all = readUnixSockets();
    const get = (k: string) => {
      const ino = byFd.get(fds[k]);
      assert(ino, `fd ${fds[k]} (${k}) is a socket`);
      const s = all.get(ino);
      assert(s, `socket ${ino} (${k}) is in the diag dump`);
      return s;
    };

    const lst = get("listen"), waiting = get("waiting");
    assertEquals([lst.type, lst.state, lst.name], ["STREAM", "LISTEN", `${dir}/listen.sock`]);
    assertEquals(lst.abstract, false);
    const st = Deno.statSync(`${dir}/listen.sock`);
    assertEquals(lst.vfs?.ino, st.ino);
    assertEquals(lst.pending, [waiting.inode]);
    assertEquals([lst.rqueue, lst.wqueue], [1, 5]); // a listener reports queue and backlog
    assertEquals(lst.uid, Deno.uid());

    const ab = get("abstract");
    assertEquals([ab.type, ab.state, ab.name, ab.abstract], [
      "DGRAM",
      "UNCONNECTED",
      `@${abstract}`,
      true,
    ]);
    assertEquals(ab.peer, null);
    assertEquals(ab.vfs, null);

    const a = get("a"), b = get("b");
    assertEquals([a.type, a.state, b.state], ["SEQPACKET", "ESTABLISHED", "ESTABLISHED"]);
    assertEquals([a.peer, b.peer], [b.inode, a.inode]);
    assertEquals([a.name, b.name], [null, null]);
    assertEquals(b.rqueue, 5);
    assertEquals(a.shutdown, SHUT_WR);

    // The server of a connected datagram socket closed: diag reports peer 0.
    const orphan = get("orphan");
    assertEquals([orphan.type, orphan.peer], ["DGRAM", 0]);

    // A single-inode query sees the same socket; a missing inode is null.
    assertEquals(readUnixSocket(a.inode)?.peer, b.inode);
    assertEquals(readUnixSocket(0xfffffff0), null);
  } finally {
    await stopPython(py);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseUnixDiag decodes names, attributes and stops at NLMSG_DONE", () => {
  const attrs: [number, number[]][] = [
    [0, [0, ...new TextEncoder().encode("x\0y")]], // abstract name with an inner NUL
    [2, [0x39, 0x30, 0, 0]], // peer 12345
    [6, [3]], // shutdown both ways
  ];
  const body: number[] = [1, 2, 1, 0, 0x0a, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0];
  for (const [type, payload] of attrs) {
    const len = 4 + payload.length;
    body.push(len & 0xff, len >> 8, type, 0, ...payload);
    while (body.length % 4) body.push(0);
  }
  const msg = (type: number, payload: number[]) => {
    const len = 16 + payload.length;
    return [len, 0, 0, 0, type, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...payload];
  };
  const bytes = new Uint8Array([...msg(20, body), ...msg(3, [0, 0, 0, 0]), ...msg(20, body)]);
  const socks = parseUnixDiag(bytes);
  assertEquals(socks.length, 1);
  assertEquals(socks[0].inode, 10);
  assertEquals(socks[0].cookie, 7);
  assertEquals([socks[0].type, socks[0].state], ["DGRAM", "ESTABLISHED"]);
  assertEquals([socks[0].name, socks[0].abstract], ["@x@y", true]);
  assertEquals([socks[0].peer, socks[0].shutdown], [12345, 3]);
});
