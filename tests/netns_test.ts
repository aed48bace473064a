// Network namespaces: a tree started by util-linux `unshare --net` in a new
// network namespace, set up from outside with iproute2 and nftables (a veth
// with one end outside, a veth pair inside, addresses, routes in
// two tables, a rule, a permanent neighbour, sysctls, a ruleset), dumped and
// restored into a new namespace; checked by what `ip`/`nft` show inside and
// by what the restored program does there (UDP on each address, a datagram
// from outside through the veth, its UNIX server socket, now in that
// namespace). Also: --empty-ns net with the caller setting the namespace up
// at setup-namespaces, --join-ns, and what is refused.
import { assert, assertEquals, assertStringIncludes } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { openDir, RpcClient, T } from "./helpers/criu_rpc.ts";
import { fd as fdops, O } from "../src/native/mod.ts";
import { ensureProgram } from "./helpers/packages.ts";
import { gone, killAndForget, readText, startSession, tempDir, until } from "./helpers/proc.ts";

const PROBE = new URL("./workloads/net/netns_probe.py", import.meta.url).pathname;

async function sh(cmd: string): Promise<string> {
  const out = await new Deno.Command("sh", {
    args: ["-c", cmd],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`${cmd}: ${dec.decode(out.stderr).trim()}`);
  return dec.decode(out.stdout);
}

const inNs = (pid: number, cmd: string) => sh(`nsenter --net=/proc/${pid}/ns/net sh -c '${cmd}'`);

/** What the namespace holds, as `ip`, `nft` and sysctl say it (what
 * changes by itself left out: the outside peer's index). IPv6 routes the
 * kernel makes for each link as it comes up are compared as a set (their
 * order follows the kernel's link events). */
async function netState(pid: number): Promise<string> {
  const lines = (t: string) =>
    t.split("\n").map((l) => l.replace(/\s+/g, " ").trim()).filter(Boolean);
  const v6 = lines(await inNs(pid, "ip -6 route show table all")).sort();
  const rest = lines(
    await inNs(
      pid,
      'ip -o link | sed -e "s/@if[0-9]*//" -e "s/link-netnsid [0-9]*//"; ip -o addr; ' +
        "ip -4 route show table all; ip rule; ip -6 rule; " +
        "ip neigh show nud permanent; nft list ruleset; " +
        "sysctl net.ipv4.ip_forward net.ipv4.conf.eth0.rp_filter net.ipv6.conf.eth0.hop_limit " +
        "net.core.somaxconn net.ipv4.ip_local_port_range",
    ),
  );
  return [...rest, ...v6].join("\n");
}

function tag(): string {
  return crypto.getRandomValues(new Uint8Array(3)).reduce((a, b) => a + b.toString(16), "");
}

async function startProbe(dir: string, withSocket: boolean, wrap: string[] = []) {
  const unshare = await ensureProgram("unshare", "util-linux");
  const python = await ensureProgram("python3", "python3");
  const argv = wrap.length ? wrap : [unshare, "--net"];
  const p = startSession([
    ...argv,
    python,
    PROBE,
    `${dir}/log`,
    ...(withSocket ? [`${dir}/sock`] : []),
  ]);
  await until("probe ready", () => readText(`${dir}/log`).includes("ready"));
  return p;
}

async function report(pid: number, dir: string, n: number): Promise<string> {
  Deno.kill(pid, "SIGUSR1");
  await until("a probe report", () => readText(`${dir}/log`).split("report ").length > n);
  return readText(`${dir}/log`).split("report ")[n].split("\n")[0];
}

async function unixEcho(path: string, word: string): Promise<string> {
  return (await sh(
    `python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.connect('${path}'); ` +
      `s.send(b'${word}'); print(s.recv(64).decode())"`,
  )).trim();
}

async function udpFromOutside(from: string, to: string, port: number): Promise<string> {
  return (await sh(
    `python3 -c "import socket; s=socket.socket(); s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); ` +
      `s.bind(('${from}', 0)); s.settimeout(5); s.sendto(b'outside', ('${to}', ${port})); ` +
      `print(s.recv(64).decode())"`,
  )).trim();
}

async function waitDad(pid: number): Promise<void> {
  await until("IPv6 duplicate address detection", async () => {
    return !(await inNs(pid, "ip -6 addr")).includes("tentative");
  });
}

Deno.test("network namespace (unshare --net): links, addresses, routes, rules, neighbours, sysctls and nftables rules come back; the program serves on them", async () => {
  await ensureProgram("ip", "iproute2");
  await ensureProgram("nft", "nftables");
  const dir = await tempDir("netns");
  const t = tag();
  const out = `ckv${t}`;
  const net = 1 + (parseInt(t, 16) % 250);
  const [me, it] = [`10.77.${net}.1`, `10.77.${net}.2`];
  let pid = 0;
  try {
    pid = (await startProbe(dir, true)).pid;
    await sh(`ip link add ${out} type veth peer name eth0 netns ${pid}`);
    await sh(`ip addr add ${me}/24 dev ${out} && ip link set ${out} up`);
    await inNs(
      pid,
      [
        "ip link set lo up",
        "ip link set eth0 mtu 1400 up",
        `ip addr add ${it}/24 dev eth0`,
        "ip -6 addr add fd77::2/64 dev eth0",
        `ip route add 10.78.0.0/16 via ${me}`,
        `ip route add default via ${me} table 100`,
        `ip rule add from ${it} lookup 100 pref 1000`,
        "ip neigh add 10.77.0.99 lladdr 02:00:00:00:00:99 dev eth0 nud permanent",
        "ip link add va type veth peer name vb",
        "ip addr add 10.79.0.1/30 dev va",
        "ip addr add 192.168.77.1/24 dev vb",
        "ip link set va up",
        "ip link set vb up",
        "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.eth0.rp_filter=2",
        "sysctl -qw net.ipv6.conf.eth0.hop_limit=33 net.core.somaxconn=1234",
        'sysctl -qw net.ipv4.ip_local_port_range="20000 30000"',
        "nft add table inet ckf",
        "nft add chain inet ckf input { type filter hook input priority 0 \\; policy accept \\; }",
        "nft add rule inet ckf input udp dport 9 counter drop",
      ].join(" && "),
    );
    await waitDad(pid);
    Deno.writeTextFileSync(`${dir}/log.addrs`, `${it}\nfd77::2\n192.168.77.1\n10.79.0.1\n::1\n`);
    const first = await report(pid, dir, 1);
    assertStringIncludes(first, "1:lo,2:eth0");
    const before = await netState(pid);
    assertEquals(await unixEcho(`${dir}/sock`, "one"), "echo one");

    const refused = await runCkpt(["dump", "-t", String(pid), "-D", `${dir}/no`]);
    assertEquals(refused.code, 1);
    assertStringIncludes(refused.stderr, "--external veth[eth0]");
    assertStringIncludes(refused.stderr, out);
    assert(
      !(await sh("ip -o link")).includes("ckv") || (await sh(`ip -o link show ${out}`)) !== "",
    );

    const d = await runCkpt([
      "dump",
      "-t",
      String(pid),
      "-D",
      `${dir}/img`,
      "--external",
      "veth[eth0]",
    ]);
    assertEquals(d.code, 0, d.stderr);
    await until("the tree gone", () => gone(pid));
    // The namespace died with the tree, and its veth pair with it.
    await until("the old pair gone", async () => !(await sh("ip -o link")).includes(`${out}@`));

    const r = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    // The outside end is made again with its name; setting it up is the
    // caller's business (as for CRIU).
    await sh(`ip addr add ${me}/24 dev ${out} && ip link set ${out} up`);
    await waitDad(pid);
    assertEquals(await netState(pid), before);
    assert(
      Deno.readLinkSync(`/proc/${pid}/ns/net`) !== Deno.readLinkSync("/proc/self/ns/net"),
      "a network namespace of its own",
    );
    const after = await report(pid, dir, 2);
    assertEquals(after, first, "the program sees the same links and binds every address");
    for (const a of [it, "fd77::2", "192.168.77.1", "10.79.0.1", "::1"]) {
      assertStringIncludes(after, `udp ${a} ok`);
    }
    // The UNIX server socket lives in the restored namespace and serves.
    assertStringIncludes(await inNs(pid, "ss -xl"), `${dir}/sock`);
    assertEquals(await unixEcho(`${dir}/sock`, "two"), "echo two");
    // A datagram from outside through the veth, answered from inside.
    const port = 20000 + (net * 37) % 9000;
    Deno.writeTextFileSync(`${dir}/log.echo`, `${it} ${port}`);
    Deno.kill(pid, "SIGUSR1");
    await until("the probe listening", () => readText(`${dir}/log`).includes("listening"));
    assertEquals(await udpFromOutside(me, it, port), "echo outside");
  } finally {
    if (pid) await killAndForget(pid);
    await sh(`ip link del ${out} 2>/dev/null || true`);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("network namespace: other link kinds and a bridge are refused by name, the tree runs on", async () => {
  await ensureProgram("ip", "iproute2");
  const dir = await tempDir("netns-refused");
  let pid = 0;
  try {
    pid = (await startProbe(dir, false)).pid;
    await inNs(
      pid,
      "ip link add br0 type bridge && ip link add d0 type veth peer name d1 && " +
        "ip link set d0 master br0",
    );
    const r = await runCkpt(["dump", "-t", String(pid), "--dry-run"]);
    assertEquals(r.code, 1, r.stdout);
    assertStringIncludes(r.stdout, "network link br0 (index 2) is a bridge link");
    assertStringIncludes(r.stdout, "network link d0 (index 4) is enslaved");
    const d = await runCkpt(["dump", "-t", String(pid), "-D", `${dir}/img`]);
    assertEquals(d.code, 1);
    assertStringIncludes(d.stderr, "br0");
    assertStringIncludes(await report(pid, dir, 1), "ifaces 1:lo,2:br0,");
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--empty-ns net: nothing of the namespace is saved; restore makes one with lo alone and the setup-namespaces script sets it up", async () => {
  await ensureProgram("ip", "iproute2");
  const dir = await tempDir("netns-empty");
  const t = tag();
  const out = `cke${t}`;
  const net = 1 + (parseInt(t, 16) % 250);
  let pid = 0;
  try {
    pid = (await startProbe(dir, true)).pid;
    await sh(`ip link add ${out} type veth peer name eth0 netns ${pid}`);
    await inNs(
      pid,
      `ip link set lo up && ip addr add 10.76.${net}.2/24 dev eth0 && ip link set eth0 up`,
    );
    // No --external needed: the namespace's content is the caller's.
    const d = await runCkpt(["dump", "-t", String(pid), "-D", `${dir}/img`, "--empty-ns", "net"]);
    assertEquals(d.code, 0, d.stderr);
    const shown = JSON.parse((await runCkpt(["show", `${dir}/img/namespaces.img`])).stdout);
    assertEquals(shown.payload.net.empty, true);
    assertEquals(shown.payload.net.links, []);
    await until("the tree gone", () => gone(pid));
    // The caller's script, as runc's hooks do at setup-namespaces: a veth
    // moved in, an address (another one than before).
    const script = `${dir}/setup.sh`;
    Deno.writeTextFileSync(
      script,
      `#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = setup-namespaces ] || exit 0\n` +
        `echo "$CRTOOLS_INIT_PID" > ${dir}/setup.pid\n` +
        `nsenter --net=/proc/$CRTOOLS_INIT_PID/ns/net ip -o link > ${dir}/setup.links\n` +
        `ip link add ${out} type veth peer name net1 netns $CRTOOLS_INIT_PID || exit 1\n` +
        `nsenter --net=/proc/$CRTOOLS_INIT_PID/ns/net sh -c ` +
        `'ip addr add 10.75.${net}.2/24 dev net1 && ip link set net1 up' || exit 1\n`,
    );
    Deno.chmod(script, 0o755);
    const r = await runCkpt(["restore", "-D", `${dir}/img`, "-d", "--action-script", script]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(readText(`${dir}/setup.pid`).trim(), String(pid));
    const seen = readText(`${dir}/setup.links`).trim().split("\n");
    assertEquals(seen.length, 1, seen.join("\n"));
    assertStringIncludes(seen[0], "lo: <LOOPBACK,UP,LOWER_UP>");
    Deno.writeTextFileSync(`${dir}/log.addrs`, `10.75.${net}.2\n127.0.0.1\n`);
    const rep = await report(pid, dir, 1);
    assertStringIncludes(rep, "ifaces 1:lo,");
    assertStringIncludes(rep, `udp 10.75.${net}.2 ok`);
    assertStringIncludes(rep, "udp 127.0.0.1 ok");
    assertStringIncludes(await inNs(pid, "ss -xl"), `${dir}/sock`);
    assertEquals(await unixEcho(`${dir}/sock`, "x"), "echo x");
  } finally {
    if (pid) await killAndForget(pid);
    await sh(`ip link del ${out} 2>/dev/null || true`);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--join-ns net:PATH restores into an existing named namespace", async () => {
  await ensureProgram("ip", "iproute2");
  const dir = await tempDir("netns-join");
  const name = `ckj${tag()}`;
  let pid = 0;
  try {
    await sh(`ip netns add ${name} && ip -n ${name} link set lo up`);
    await sh(`ip -n ${name} link add d0 type veth peer name d1`);
    await sh(`ip -n ${name} addr add 10.74.0.2/24 dev d0 && ip -n ${name} link set d0 up`);
    pid = (await startProbe(dir, true, ["nsenter", `--net=/run/netns/${name}`])).pid;
    Deno.writeTextFileSync(`${dir}/log.addrs`, "10.74.0.2\n");
    assertStringIncludes(await report(pid, dir, 1), "udp 10.74.0.2 ok");
    const d = await runCkpt(["dump", "-t", String(pid), "-D", `${dir}/img`]);
    assertEquals(d.code, 0, d.stderr);
    await until("the tree gone", () => gone(pid));
    // The named namespace outlives the tree: its dummy is still there, so a
    // restore into a new namespace would make a second one; join it instead.
    const r = await runCkpt([
      "restore",
      "-D",
      `${dir}/img`,
      "-d",
      "--join-ns",
      `net:/run/netns/${name}`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(
      Deno.statSync(`/proc/${pid}/ns/net`).ino,
      Deno.statSync(`/run/netns/${name}`).ino,
      "the restored tree is in the named namespace",
    );
    assertStringIncludes(await report(pid, dir, 2), "udp 10.74.0.2 ok");
    assertStringIncludes(await sh(`ip netns exec ${name} ss -xl`), `${dir}/sock`);
    assertEquals(await unixEcho(`${dir}/sock`, "j"), "echo j");
  } finally {
    if (pid) await killAndForget(pid);
    await sh(`ip netns del ${name} 2>/dev/null || true`);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RPC as runc sends it: DUMP and RESTORE with empty_ns=CLONE_NEWNET, the namespace set up at the setup-namespaces NOTIFY", async () => {
  await ensureProgram("ip", "iproute2");
  const dir = await tempDir("netns-rpc");
  const images = `${dir}/img`;
  Deno.mkdirSync(images, { mode: 0o700 });
  const t = tag();
  const out = `ckr${t}`;
  const net = 1 + (parseInt(t, 16) % 250);
  let pid = 0;
  try {
    pid = (await startProbe(dir, true)).pid;
    await sh(`ip link add ${out} type veth peer name eth0 netns ${pid}`);
    const c = await RpcClient.swrk();
    const fd = openDir(images);
    const d = await c.call({
      type: T.DUMP,
      opts: { imagesDirFd: fd, pid, logFile: "dump.log", emptyNs: 0x40000000 },
    });
    assertEquals(d.success, true, d.crErrmsg);
    await c.close();
    await until("the tree gone", () => gone(pid));
    const c2 = await RpcClient.swrk();
    const r = await c2.call({
      type: T.RESTORE,
      opts: {
        imagesDirFd: fd,
        logFile: "restore.log",
        notifyScripts: true,
        emptyNs: 0x40000000,
      },
    }, async (n) => {
      if (n.script === "setup-namespaces") {
        // What runc's prestart hooks (CNI) do with the pid it is given.
        assertStringIncludes(await inNs(n.pid!, "ip -o link"), "lo:");
        await sh(`ip link add ${out} type veth peer name eth0 netns ${n.pid}`);
        await inNs(n.pid!, `ip addr add 10.73.${net}.2/24 dev eth0 && ip link set eth0 up`);
      }
      return true;
    });
    assertEquals(r.success, true, r.crErrmsg);
    assertEquals(r.restore?.pid, pid);
    assert(c2.notified.some((n) => n.script === "setup-namespaces" && n.pid === pid));
    await c2.close();
    fdops.close(fd);
    Deno.writeTextFileSync(`${dir}/log.addrs`, `10.73.${net}.2\n`);
    assertStringIncludes(await report(pid, dir, 1), `udp 10.73.${net}.2 ok`);
    assertEquals(await unixEcho(`${dir}/sock`, "r"), "echo r");
  } finally {
    if (pid) await killAndForget(pid);
    await sh(`ip link del ${out} 2>/dev/null || true`);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RPC: a namespace given as external net[INO]:extRootNetNS is not saved and is joined from inherit_fd at RESTORE", async () => {
  await ensureProgram("ip", "iproute2");
  const dir = await tempDir("netns-ext");
  const images = `${dir}/img`;
  Deno.mkdirSync(images, { mode: 0o700 });
  const name = `ckx${tag()}`;
  let pid = 0;
  try {
    await sh(`ip netns add ${name} && ip -n ${name} link set lo up`);
    pid = (await startProbe(dir, true, ["nsenter", `--net=/run/netns/${name}`])).pid;
    const ino = Deno.statSync(`/run/netns/${name}`).ino;
    const fd = openDir(images);
    const c = await RpcClient.swrk();
    const d = await c.call({
      type: T.DUMP,
      opts: { imagesDirFd: fd, pid, logFile: "dump.log", external: [`net[${ino}]:extRootNetNS`] },
    });
    assertEquals(d.success, true, d.crErrmsg);
    await c.close();
    await until("the tree gone", () => gone(pid));
    const shown = JSON.parse((await runCkpt(["show", `${images}/namespaces.img`])).stdout);
    assertEquals(shown.payload.net.external_key, "extRootNetNS");
    const nsFd = fdops.open(`/run/netns/${name}`, O.RDONLY | O.CLOEXEC);
    const c2 = await RpcClient.swrk({ extra: [[nsFd, 7]] });
    fdops.close(nsFd);
    const r = await c2.call({
      type: T.RESTORE,
      opts: {
        imagesDirFd: fd,
        logFile: "restore.log",
        inheritFd: [{ key: "extRootNetNS", fd: 7 }],
      },
    });
    assertEquals(r.success, true, r.crErrmsg);
    await c2.close();
    fdops.close(fd);
    assertEquals(Deno.statSync(`/proc/${pid}/ns/net`).ino, ino);
    assertStringIncludes(await sh(`ip netns exec ${name} ss -xl`), `${dir}/sock`);
    assertEquals(await unixEcho(`${dir}/sock`, "e"), "echo e");
  } finally {
    if (pid) await killAndForget(pid);
    await sh(`ip netns del ${name} 2>/dev/null || true`);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a container of unshare --net --pid --fork --uts --ipc (and one with its own user namespace) comes back with its network", async () => {
  await ensureProgram("ip", "iproute2");
  const unshare = await ensureProgram("unshare", "util-linux");
  for (const user of [false, true]) {
    const dir = await tempDir("netns-box");
    const t = tag();
    const out = `ckb${t}`;
    const net = 1 + (parseInt(t, 16) % 250);
    const launcher = startSession([
      unshare,
      ...(user ? ["--user", "--map-root-user"] : []),
      "--net",
      "--pid",
      "--fork",
      "--uts",
      "--ipc",
      "python3",
      PROBE,
      `${dir}/log`,
      `${dir}/sock`,
    ]);
    let pid = 0;
    try {
      await until("probe ready", () => readText(`${dir}/log`).includes("ready"));
      pid = Number(readText(`/proc/${launcher.pid}/task/${launcher.pid}/children`).trim());
      await sh(`ip link add ${out} type veth peer name eth0 netns ${pid}`);
      await inNs(
        pid,
        `ip link set lo up && ip addr add 10.72.${net}.2/24 dev eth0 && ip link set eth0 up`,
      );
      Deno.writeTextFileSync(`${dir}/log.addrs`, `10.72.${net}.2\n::1\n`);
      const first = await report(pid, dir, 1);
      // "linkdown" says whether eth0 has a carrier: whether the outside end
      // (the caller's, made down at restore) is up, and when the kernel's
      // link watch got to it; not state of the namespace.
      const routes = async () =>
        (await inNs(pid, "ip -o addr; ip -4 route show table all")).replaceAll(" linkdown", "");
      const before = await routes();
      const d = await runCkpt([
        "dump",
        "-t",
        String(pid),
        "-D",
        `${dir}/img`,
        "--external",
        "veth[eth0]",
      ]);
      assertEquals(d.code, 0, d.stderr);
      await until("the tree gone", () => gone(pid));
      const r = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(await routes(), before);
      assertEquals(await report(pid, dir, 2), first);
      assertStringIncludes(first, `udp 10.72.${net}.2 ok`);
      assertEquals(await unixEcho(`${dir}/sock`, "b"), "echo b");
      if (user) {
        assert(
          Deno.readLinkSync(`/proc/${pid}/ns/user`) !== Deno.readLinkSync("/proc/self/ns/user"),
          "its own user namespace",
        );
        // The namespace belongs to the restored user namespace: its root
        // can configure it.
        await sh(
          `nsenter --target ${pid} --user --net --preserve-credentials ip link set eth0 mtu 1400`,
        );
      }
    } finally {
      if (pid) await killAndForget(pid);
      await killAndForget(launcher.pid);
      await sh(`ip link del ${out} 2>/dev/null || true`);
      await Deno.remove(dir, { recursive: true });
    }
  }
});
