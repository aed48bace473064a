import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import type { SocketReport } from "../mod.ts";
import { listSockets } from "../mod.ts";
import { permitted, refusal } from "../src/unix/policy.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { startPython, stopPython } from "./helpers/peers.ts";

interface Held {
  fd: number;
  ino: number;
}
interface TreeInfo {
  pid: number;
  child: number;
  pair: Held;
  dgram: Held;
  stream: Held;
  lazy: Held;
  ext: Held;
  orphan: Held;
  half: Held;
  own: Held;
}
interface OutsideInfo {
  pid: number;
  tree: number;
  dgram: number;
  listener: number;
  lazy: number;
  pair: number;
}

Deno.test("ckpt sockets classifies peers inside, outside and gone, and names the option", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ckpt-sockets-" });
  const outside = startPython("unix_outside.py", [dir]);
  let tree: TreeInfo | undefined;
  let visitor: Deno.Conn | undefined;
  try {
    const out = await outside.next<OutsideInfo>();
    tree = await outside.next<TreeInfo>();
    assertEquals(tree.pid, out.tree);
    visitor = await Deno.connect({ transport: "unix", path: `${dir}/tree.sock` });

    const r = await runCkpt(["sockets", "-t", String(tree.pid), "--json"]);
    assertEquals(r.code, 0, r.stderr);
    const rep = JSON.parse(r.stdout) as SocketReport;
    assertEquals(rep.root, tree.pid);
    assertEquals(rep.tasks.map((t) => t.pid).sort(), [tree.pid, tree.child].sort());
    const at = (pid: number, fd: number) => {
      const e = rep.sockets.find((s) => s.pid === pid && s.fd === fd);
      assert(e, `pid ${pid} fd ${fd} is listed`);
      return e;
    };

    // A socketpair shared with the forked child: both ends inside, no option.
    const pair = at(tree.pid, tree.pair.fd);
    assertEquals(pair.inode, tree.pair.ino);
    assertEquals(pair.peerInfo.place, "inside");
    assertEquals(pair.peerInfo.holders[0].pid, tree.child);
    assertEquals(pair.need, null);
    assertEquals(at(tree.child, pair.peerInfo.holders[0].fd).peer, pair.inode);

    // One-way datagram client of an outside server.
    const dg = at(tree.pid, tree.dgram.fd);
    assertEquals([dg.type, dg.peer, dg.peerInfo.place], ["DGRAM", out.dgram, "outside"]);
    assertEquals(dg.peerInfo.name, `${dir}/dgram.sock`);
    assertEquals(dg.peerInfo.holders[0].pid, out.pid);
    assertEquals(dg.peerInfo.holders[0].comm, "python3");
    assertEquals(dg.need?.kind, "dgram-oneway");
    assertEquals(dg.need?.dump, "--ext-unix-sk");
    assert((dg.wqueue ?? 0) > 0, "the unread datagram counts against the sender");

    // Stream connection accepted by an outside server.
    const st = at(tree.pid, tree.stream.fd);
    assertEquals([st.type, st.peerInfo.place, st.peerInfo.name], [
      "STREAM",
      "outside",
      `${dir}/stream.sock`,
    ]);
    assertEquals(st.need?.dump, `--ext-unix-sk=${tree.stream.ino}`);
    assertEquals(st.need?.restore, `--ext-unix-sk=${tree.stream.ino}[=PATH]`);

    // Stream connection still waiting in the outside server's accept queue.
    const lazy = at(tree.pid, tree.lazy.fd);
    assertEquals(lazy.peerInfo.place, "outside");
    assertEquals(lazy.peerInfo.pendingOn?.inode, out.lazy);
    assertEquals(lazy.need?.dump, `--ext-unix-sk=${tree.lazy.ino}`);

    // One end of a socketpair whose other end the outside process holds.
    const ext = at(tree.pid, tree.ext.fd);
    assertEquals([ext.peer, ext.peerInfo.place, ext.peerInfo.mutual], [out.pair, "outside", true]);
    assertEquals(ext.peerInfo.holders[0].pid, out.pid);
    assertEquals(ext.need?.kind, "unnamed-peer");
    assertEquals(ext.need?.dump, `--external unix[${tree.ext.ino}]`);
    assertEquals(ext.need?.restore, `--inherit-fd fd[N]:socket:[${tree.ext.ino}]`);

    // Peers that closed: a datagram server and the other end of a pair.
    for (const held of [tree.orphan, tree.half]) {
      const g = at(tree.pid, held.fd);
      assertEquals([g.peer, g.peerInfo.place, g.need], [0, "gone", null]);
    }
    assertEquals(at(tree.pid, tree.half.fd).shutdown, 3);

    // A listener of the tree with a connection from outside waiting in accept().
    const own = at(tree.pid, tree.own.fd);
    assertEquals([own.state, own.peerInfo.place, own.need], ["LISTEN", "none", null]);
    assertEquals(own.outsideClients.length, 1);

    assertEquals(rep.summary.dumpOptions, [
      "--ext-unix-sk",
      `--ext-unix-sk=${tree.stream.ino}`,
      `--ext-unix-sk=${tree.lazy.ino}`,
      `--external unix[${tree.ext.ino}]`,
    ]);

    // The library answers the same.
    const lib = await listSockets(tree.pid);
    assertEquals(lib.summary.dumpOptions, rep.summary.dumpOptions);

    // Human output: one row per descriptor and the options to pass.
    const h = await runCkpt(["sockets", "-t", String(tree.pid)]);
    assertEquals(h.code, 0, h.stderr);
    const row = (ino: number) => h.stdout.split("\n").find((l) => l.includes(` ${ino} `)) ?? "";
    assertMatch(row(tree.pair.ino), /inside: pid \d+ \(python3\)/);
    assertStringIncludes(row(tree.dgram.ino), `outside: ${dir}/dgram.sock pid ${out.pid}`);
    assertStringIncludes(row(tree.dgram.ino), "--ext-unix-sk");
    assertStringIncludes(row(tree.stream.ino), `--ext-unix-sk=${tree.stream.ino}`);
    assertStringIncludes(row(tree.ext.ino), `--external unix[${tree.ext.ino}]`);
    assertStringIncludes(row(tree.orphan.ino), "gone");
    assertStringIncludes(h.stdout, `--inherit-fd 'fd[N]:socket:[${tree.ext.ino}]'`);
    assertStringIncludes(h.stdout, `--external 'unix[${tree.ext.ino}]'`);
    assertStringIncludes(
      h.stdout,
      `Listener ${tree.own.ino} (pid ${tree.pid} fd ${tree.own.fd}) has 1`,
    );

    // Dump will reuse the policy: what is allowed, and what it says otherwise.
    const none = { extUnixSk: [], external: [] };
    assertEquals(permitted(dg.need!, none), false);
    assertEquals(permitted(dg.need!, { extUnixSk: [""], external: [] }), true);
    assertEquals(permitted(st.need!, { extUnixSk: [""], external: [] }), false);
    assertEquals(permitted(st.need!, { extUnixSk: [String(st.inode)], external: [] }), true);
    assertEquals(permitted(ext.need!, { extUnixSk: [], external: [`unix[${ext.inode}]`] }), true);
    const msg = refusal({
      pid: st.pid,
      fd: st.fd,
      comm: st.comm,
      socket: st,
      peerInode: st.peer,
      peerName: st.peerInfo.name,
      peerOwner: `pid ${out.pid} (python3)`,
    }, st.need!);
    assertStringIncludes(msg, `${dir}/stream.sock`);
    assertStringIncludes(msg, `--ext-unix-sk=${st.inode}`);
    assertEquals(msg.includes("\n"), false);
  } finally {
    visitor?.close();
    await stopPython(outside, [tree?.child, tree?.pid]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ckpt sockets on a missing PID is one line and exit 1", async () => {
  // A free pid (the highest one not in use); above PID_MAX_LIMIT is a usage error.
  let pid = 4194303;
  while (exists(`/proc/${pid}`)) pid--;
  const r = await runCkpt(["sockets", "-t", String(pid)]);
  assertEquals(r.code, 1);
  assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
  assertStringIncludes(r.stderr, String(pid));
  const j = await runCkpt(["sockets", "-t", String(pid), "--json"]);
  assertEquals(j.code, 1);
  const huge = await runCkpt(["sockets", "-t", String(4194304 + 17)]);
  assertEquals(huge.code, 2, huge.stderr);
});

function exists(p: string): boolean {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
}

Deno.test("ckpt sockets without -t is a usage error", async () => {
  const r = await runCkpt(["sockets"]);
  assertEquals(r.code, 2);
  assertMatch(r.stderr, /^ckpt: sockets: -t PID is required/);
});
