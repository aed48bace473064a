// Objects whose path was deleted (or replaced) while the tree held them, and
// messages queued with their senders' credentials: the restored program
// checks what it holds itself (tests/peers/deleted_paths.py).
import { assert, assertEquals } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { gone, killAndForget, readText, startSession, tempDir, until } from "./helpers/proc.ts";
import { PEERS } from "./helpers/peers.ts";

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
