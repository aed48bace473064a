// UDP, UDP-Lite, netlink and listening TCP sockets with their options
// through dump and restore, checked by what the restored programs then do:
// read the datagrams queued at dump (same bytes, same senders), receive
// multicast, ask the kernel for links on a never-bound route socket, hear
// address events, accept connections with the options they had.
import { assert, assertEquals } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { gone, killAndForget, readText, startSession, tempDir, until } from "./helpers/proc.ts";
import { NET, PEERS, shownFiles, waitFile } from "./helpers/net.ts";
import { InetTable, IPPROTO_TCP } from "../src/net/diag.ts";

async function dump(pid: number, status: Promise<unknown>, args: string[]) {
  const r = await runCkpt(["dump", "-t", String(pid), ...args]);
  assertEquals(r.code, 0, r.stderr);
  await status;
  await until(`pid ${pid} free`, () => gone(pid));
  return r;
}

async function send(src: string, dst: string, port: number, proto: string, msgs: string[]) {
  const out = await new Deno.Command("python3", {
    args: [`${PEERS}/udp_send.py`, src, dst, String(port), proto, ...msgs],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert(out.success, "udp_send.py");
  return JSON.parse(new TextDecoder().decode(out.stdout)).from as string;
}

/** A UDP port nobody holds now, for the test's own peer socket. */
async function freeUdpPort(host: string): Promise<number> {
  const out = await new Deno.Command("python3", {
    args: [
      "-c",
      "import socket,sys;h=sys.argv[1];s=socket.socket(socket.AF_INET6 if ':' in h else " +
      "socket.AF_INET,socket.SOCK_DGRAM);s.bind((h,0));print(s.getsockname()[1])",
      host,
    ],
    stdout: "piped",
  }).output();
  return Number(new TextDecoder().decode(out.stdout));
}

async function ip(args: string[]): Promise<void> {
  const out = await new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).output();
  assert(out.success, `ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

interface Got {
  sock: string;
  data: string;
  from: string;
  to: string;
}

for (const v of ["4", "6"]) {
  Deno.test(`UDP${v === "6" ? "6" : ""} and UDP-Lite: queued datagrams come back with their senders; bound, connected, multicast and options kept`, async () => {
    const dir = await tempDir(`udp${v}`);
    const lo = v === "6" ? "::1" : "127.0.0.1";
    const other = v === "6" ? "::1" : "127.0.0.2";
    const group = v === "6" ? "ff02::1:3" : "239.1.2.3";
    const peerPort = await freeUdpPort(lo);
    await Deno.writeTextFile(`${dir}/peer`, String(peerPort));
    const s = startSession(["python3", `${NET}/udp_queue.py`, dir, v]);
    try {
      const ports = JSON.parse(await waitFile(`${dir}/ports`));
      const want: Got[] = [];
      const a = await send(lo, lo, ports.any, "udp", ["any 1", "any 2", ""]);
      const b = await send(other, lo, ports.any, "udp", ["any 3 from elsewhere"]);
      // IPv6 multicast cannot be sent through lo (no multicast route there):
      // the group's membership is checked by the program itself.
      const mc = v === "4" ? await send(lo, group, ports.any, "udp", ["multicast before"]) : "";
      const big = "x".repeat(60000);
      const c = await send(lo, lo, ports.any, "udp", [big]);
      want.push(
        { sock: "any", data: "any 1", from: a, to: `${lo}:${ports.any}` },
        { sock: "any", data: "any 2", from: a, to: `${lo}:${ports.any}` },
        { sock: "any", data: "", from: a, to: `${lo}:${ports.any}` },
        { sock: "any", data: "any 3 from elsewhere", from: b, to: `${lo}:${ports.any}` },
        ...(v === "4" ? [{ sock: "any", data: "multicast before", from: mc, to: "" }] : []),
        { sock: "any", data: big, from: c, to: `${lo}:${ports.any}` },
      );
      const nAny = want.length;
      const pf = await send(`${lo}@${peerPort}`, lo, ports.conn, "udp", ["to conn 1", "to conn 2"]);
      want.push(
        { sock: "conn", data: "to conn 1", from: pf, to: "" },
        { sock: "conn", data: "to conn 2", from: pf, to: "" },
      );
      const l = await send(lo, lo, ports.lite, "udplite", ["lite 1", "lite 2"]);
      want.push(
        { sock: "lite", data: "lite 1", from: l, to: "" },
        { sock: "lite", data: "lite 2", from: l, to: "" },
      );
      await new Promise((r) => setTimeout(r, 100));
      await dump(s.pid, s.status, ["-D", `${dir}/img`]);
      const queued = (await shownFiles(runCkpt, `${dir}/img`))
        .map((f) => (f.udp as { queue?: unknown[] } | undefined)?.queue?.length ?? 0);
      assertEquals(queued.reduce((x, y) => x + y, 0), want.length, "every datagram saved");
      const r = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
      assertEquals(r.code, 0, r.stderr);
      // New datagrams come after the old ones; the group is joined again.
      const n = await send(lo, lo, ports.any, "udp", ["after restore"]);
      const m2 = v === "4" ? await send(lo, group, ports.any, "udp", ["multicast after"]) : "";
      await send(`${lo}@${peerPort}`, lo, ports.conn, "udp", ["to conn 3"]);
      const late = [
        { sock: "any", data: "after restore", from: n, to: `${lo}:${ports.any}` },
        ...(v === "4" ? [{ sock: "any", data: "multicast after", from: m2, to: "" }] : []),
      ];
      want.splice(nAny, 0, ...late);
      want.splice(nAny + late.length + 2, 0, { sock: "conn", data: "to conn 3", from: pf, to: "" });
      await new Promise((r) => setTimeout(r, 100));
      await Deno.writeTextFile(`${dir}/go`, "1");
      const got: Got[] = (await waitFile(`${dir}/got`)).trim().split("\n").map((x) =>
        JSON.parse(x)
      );
      assertEquals(
        got.map((g) => [g.sock, g.data.slice(0, 30), g.data.length, g.from]),
        want.map((g) => [g.sock, g.data.slice(0, 30), g.data.length, g.from]),
      );
      for (const [i, w] of want.entries()) {
        if (w.to) {
          assertEquals(got[i].to.replace(/^\[(.*)\]/, "$1"), w.to, `destination of ${w.data}`);
        }
      }
      const st = JSON.parse(await waitFile(`${dir}/state`));
      assertEquals(st.conn.peer, [lo, peerPort]);
      assertEquals(st.any.reuse, 1);
      assertEquals([st.any.member, st.conn.member], [true, false], "the group is joined again");
      if (v === "6") {
        assertEquals(st.any.tclass, 0x28);
        assertEquals(st.any.v6only, 1);
      } else assertEquals(st.any.tos, 0x28);
    } finally {
      await killAndForget(s.pid);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("netlink: a never-bound route socket answers requests after restore, a bound one keeps its port id, groups and options and hears new events; stale messages are dropped", async () => {
  const dir = await tempDir("netlink");
  const s = startSession(["python3", `${NET}/netlink_holder.py`, dir]);
  try {
    const before = JSON.parse(await waitFile(`${dir}/before`));
    assertEquals(before.r0[0], 0, "r0 has no port id");
    // An event queued on r1 while it is dumped: stale afterwards.
    await ip(["addr", "add", "127.0.0.77/32", "dev", "lo"]);
    await ip(["addr", "del", "127.0.0.77/32", "dev", "lo"]);
    await new Promise((r) => setTimeout(r, 100));
    const d = await dump(s.pid, s.status, ["-D", `${dir}/img`]);
    assert(/netlink route socket has queued messages/.test(d.stderr), d.stderr);
    const r = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    await Deno.writeTextFile(`${dir}/go`, "1");
    const asked = JSON.parse(await waitFile(`${dir}/asked`));
    assertEquals(asked.r1, before.r1, "same port id and groups");
    assertEquals(asked.ue, before.ue);
    assertEquals(asked.r1_noenobufs, 1);
    assertEquals(asked.r1_rcvbuf, before.r1_rcvbuf);
    assertEquals(asked.r1_queued, [], "messages from before the dump are not seen");
    assert(asked.links >= 1, "the never-bound socket gets an answer");
    await ip(["addr", "add", "127.0.0.78/32", "dev", "lo"]);
    await ip(["addr", "del", "127.0.0.78/32", "dev", "lo"]);
    const after = JSON.parse(await waitFile(`${dir}/after`));
    assertEquals(after.event, 20, "RTM_NEWADDR heard after restore");
  } finally {
    await killAndForget(s.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ip monitor address (a real netlink listener) reports events after restore", async () => {
  const dir = await tempDir("ipmon");
  const s = startSession(["sh", "-c", `exec ip monitor address > ${dir}/mon.log`]);
  try {
    await until("ip monitor started", () => {
      try {
        return Deno.readLinkSync(`/proc/${s.pid}/exe`).endsWith("/ip");
      } catch {
        return false;
      }
    });
    await new Promise((r) => setTimeout(r, 200));
    await dump(s.pid, s.status, ["-D", `${dir}/img`]);
    const r = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    await ip(["addr", "add", "127.0.0.79/32", "dev", "lo"]);
    await ip(["addr", "del", "127.0.0.79/32", "dev", "lo"]);
    await until("the event is reported", () => readText(`${dir}/mon.log`).includes("127.0.0.79"));
  } finally {
    await killAndForget(s.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("listening TCP and TCP6 sockets keep their address, backlog and options (v6only, reuseaddr/port, freebind, defer-accept, keepalive, bindtodevice, fastopen, linger)", async () => {
  const dir = await tempDir("listen");
  const s = startSession(["python3", `${NET}/listen_opts.py`, dir]);
  try {
    const before = JSON.parse(await waitFile(`${dir}/before`));
    const backlog = (port: number) =>
      new InetTable([IPPROTO_TCP]).all.find((d) =>
        d.state === 10 && ((d.local[2] << 8) | d.local[3]) === port
      )?.wqueue;
    const b6 = backlog(before.v6.name[1]), b4 = backlog(before.v4.name[1]);
    assertEquals([b6, b4], [7, 3]);
    await dump(s.pid, s.status, ["-D", `${dir}/img`]);
    const r = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals([backlog(before.v6.name[1]), backlog(before.v4.name[1])], [7, 3]);
    await Deno.writeTextFile(`${dir}/go`, "1");
    const after = JSON.parse(await waitFile(`${dir}/after`));
    assertEquals(after, before);
    const c6 = await Deno.connect({ hostname: "::1", port: before.v6.name[1] });
    await c6.write(new TextEncoder().encode("hello v6"));
    const c4 = await Deno.connect({ hostname: "127.0.0.1", port: before.v4.name[1] });
    await c4.write(new TextEncoder().encode("hello v4"));
    const acc = JSON.parse(await waitFile(`${dir}/accepted`));
    assertEquals(acc, { keepidle: 77, keepalive: 1, v4data: "hello v4" });
    c6.close();
    c4.close();
  } finally {
    await killAndForget(s.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("raw ICMP and ping sockets keep their addresses, echo id and filter, and ping after restore", async () => {
  // Ping sockets are for the groups in net.ipv4.ping_group_range: root's
  // for the length of the test.
  const range = "/proc/sys/net/ipv4/ping_group_range";
  const old = Deno.readTextFileSync(range).trim();
  Deno.writeTextFileSync(range, "0 0");
  const dir = await tempDir("rawping");
  const s = startSession(["python3", `${NET}/raw_ping.py`, dir]);
  try {
    const before = JSON.parse(await waitFile(`${dir}/before`));
    await dump(s.pid, s.status, ["-D", `${dir}/img`]);
    const r = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    await Deno.writeTextFile(`${dir}/go`, "1");
    const after = JSON.parse(await waitFile(`${dir}/after`));
    assertEquals(
      { raw: after.raw, ping: after.ping, filter: after.filter },
      before,
    );
    assertEquals(after.ping_reply, [0, "ping socket"], "still connected: an echo reply to send()");
    assertEquals(
      after.raw_reply,
      [0, 0x4242, "raw socket"],
      "only the echo reply through the filter",
    );
  } finally {
    Deno.writeTextFileSync(range, old.replace(/\s+/, " "));
    await killAndForget(s.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
