// Everyday network servers nobody wrote for ckpt, dumped and restored while
// serving: an sshd with a live session (its client outside the tree keeps
// receiving the remote command's output), nginx's master and workers (same
// workers answer, a reload still works), dbus-daemon (its bus answers).
// Programs are installed from Debian when missing.
import { assert, assertEquals, assertMatch } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { ensureProgram } from "./helpers/packages.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  startSession,
  tempDir,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";
import { childrenOf } from "./helpers/tree.ts";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The body of GET / on a connection of its own, closed after (no pooled
 * connection left open for a dump to find). */
async function httpGet(port: number): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode("GET / HTTP/1.0\r\nHost: x\r\n\r\n"));
    let out = "";
    const buf = new Uint8Array(4096);
    for (let n; (n = await conn.read(buf)) !== null;) {
      out += new TextDecoder().decode(buf.subarray(0, n));
    }
    return out.slice(out.indexOf("\r\n\r\n") + 4);
  } finally {
    conn.close();
  }
}

async function dumpAndRestore(pid: number, images: string, extra: string[] = []): Promise<void> {
  const d = await runCkpt(["dump", "-t", String(pid), "-D", images, ...extra]);
  assertEquals(d.code, 0, `dump failed: ${d.stderr}`);
  await until(`pid ${pid} free`, () => gone(pid));
  // With default options: the image says how its connections were dumped.
  const r = await runCkpt(["restore", "-D", images, "-d"]);
  assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
  assert(alive(pid), "the server runs after restore");
}

Deno.test("sshd with a live session: the ssh client outside the tree goes on receiving the remote loop's output after a dump with --tcp-established and a restore with default options; new logins work", async () => {
  const sshd = await ensureProgram("sshd", "openssh-server");
  const ssh = await ensureProgram("ssh", "openssh-client");
  const keygen = await ensureProgram("ssh-keygen", "openssh-client");
  const dir = await tempDir("sshd");
  const port = freePort();
  for (const k of ["host", "user"]) {
    const o = await new Deno.Command(keygen, {
      args: ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/${k}`],
      stdin: "null",
    }).output();
    assert(o.success, "ssh-keygen");
  }
  Deno.copyFileSync(`${dir}/user.pub`, `${dir}/authorized_keys`);
  Deno.mkdirSync("/run/sshd", { recursive: true });
  Deno.writeTextFileSync(
    `${dir}/sshd_config`,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${dir}/host`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      "StrictModes no",
      "PermitRootLogin yes",
      "PasswordAuthentication no",
      "UsePAM no",
      `PidFile ${dir}/sshd.pid`,
      "",
    ].join("\n"),
  );
  const p = startSession([sshd, "-D", "-f", `${dir}/sshd_config`, "-E", `${dir}/sshd.log`]);
  const sshArgs = [
    "-q",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-i",
    `${dir}/user`,
    "-p",
    String(port),
    "root@127.0.0.1",
  ];
  let client: Deno.ChildProcess | undefined;
  try {
    await until("sshd pid file", () => readText(`${dir}/sshd.pid`) !== "");
    client = new Deno.Command(ssh, {
      args: [...sshArgs, "n=0; while :; do n=$((n+1)); echo tick $n; sleep 0.1; done"],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = client.stdout.getReader();
    let out = "";
    const readUntil = async (want: number) => {
      while (!new RegExp(`tick ${want}\n`).test(out)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`ssh ended after: ${JSON.stringify(out.slice(-200))}`);
        out += new TextDecoder().decode(value);
      }
    };
    await readUntil(5);
    const session = childrenOf(p.pid);
    assertEquals(session.length, 1, "one session process");
    await dumpAndRestore(p.pid, `${dir}/images`, ["--tcp-established"]);
    assertEquals(childrenOf(p.pid), session, "the session's sshd is back");
    const at = Number([...out.matchAll(/tick (\d+)\n/g)].at(-1)![1]);
    await readUntil(at + 15);
    const ticks = [...out.matchAll(/tick (\d+)\n/g)].map((m) => Number(m[1]));
    assertEquals(ticks, ticks.map((_, i) => i + 1), "every tick once, in order");
    reader.releaseLock();
    const again = await new Deno.Command(ssh, {
      args: [...sshArgs, "echo new-login"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(new TextDecoder().decode(again.stdout), "new-login\n");
  } finally {
    if (client) {
      try {
        client.kill("SIGKILL");
      } catch { /* gone */ }
      await client.status;
      await client.stdout.cancel().catch(() => {});
    }
    for (const c of childrenOf(p.pid)) await killAndForget(c);
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nginx master and workers: the same workers answer after restore, and a reload (SIGHUP) starts new ones that answer", async () => {
  const nginx = await ensureProgram("nginx", "nginx");
  const dir = await tempDir("nginx");
  const port = freePort();
  Deno.writeTextFileSync(
    `${dir}/nginx.conf`,
    `worker_processes 2;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server { listen 127.0.0.1:${port}; location / { return 200 "worker $pid\\n"; } }
}
`,
  );
  const p = startSession([nginx, "-c", `${dir}/nginx.conf`, "-p", dir]);
  try {
    await until("nginx workers", () => childrenOf(p.pid).length === 2, 20_000);
    await until("nginx answers", async () => (await httpGet(port).catch(() => "")) !== "");
    const workers = childrenOf(p.pid).sort();
    await dumpAndRestore(p.pid, `${dir}/images`);
    assertEquals(childrenOf(p.pid).sort(), workers);
    for (let i = 0; i < 4; i++) {
      const m = /^worker (\d+)\n$/.exec(await httpGet(port));
      assert(m && workers.includes(Number(m[1])), `answered by a restored worker: ${m?.[0]}`);
    }
    Deno.kill(p.pid, "SIGHUP");
    await until("new workers", () => {
      const now = childrenOf(p.pid);
      return now.length === 2 && now.every((w) => !workers.includes(w));
    }, 10_000);
    assertMatch(await httpGet(port), /^worker \d+\n$/);
  } finally {
    for (const c of childrenOf(p.pid)) await killAndForget(c);
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dbus-daemon: its bus answers after restore, with the names it had", async () => {
  const daemon = await ensureProgram("dbus-daemon", "dbus-daemon");
  const send = await ensureProgram("dbus-send", "dbus-bin");
  const dir = await tempDir("dbus");
  const address = `unix:path=${dir}/bus`;
  const p = startSession([daemon, "--session", "--nofork", `--address=${address}`]);
  const listNames = async () => {
    const o = await new Deno.Command(send, {
      args: [
        "--session",
        "--print-reply",
        "--dest=org.freedesktop.DBus",
        "/",
        "org.freedesktop.DBus.ListNames",
      ],
      env: { DBUS_SESSION_BUS_ADDRESS: address },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return new TextDecoder().decode(o.stdout);
  };
  try {
    await until("bus socket", () => {
      try {
        return Deno.statSync(`${dir}/bus`).isSocket === true;
      } catch {
        return false;
      }
    });
    assertMatch(await listNames(), /string ":1\.0"/);
    await dumpAndRestore(p.pid, `${dir}/images`);
    // The restored bus goes on numbering its clients from where it was.
    const names = await listNames();
    assertMatch(names, /string "org\.freedesktop\.DBus"/);
    assertMatch(names, /string ":1\.1"/);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PostgreSQL (run as its own user, restored by root): postmaster and its workers come back with their shared buffers; rows written before the dump read back, new ones commit", async () => {
  const postgresBin = await ensureProgram("pg_config", "postgresql");
  assert(postgresBin);
  const bin = [...Deno.readDirSync("/usr/lib/postgresql")].map((e) => e.name).sort().at(-1);
  assert(bin, "a PostgreSQL under /usr/lib/postgresql");
  const pgbin = `/usr/lib/postgresql/${bin}/bin`;
  const dir = await tempDir("pg");
  const images = await tempDir("pg-images");
  Deno.chmodSync(dir, 0o755);
  const data = `${dir}/data`;
  const asPg = (cmd: string) =>
    new Deno.Command("su", {
      args: ["postgres", "-s", "/bin/sh", "-c", cmd],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  const psql = async (sql: string) => {
    const o = await asPg(`${pgbin}/psql -h ${dir} -p 5432 -d postgres -tAc "${sql}"`);
    return new TextDecoder().decode(o.stdout).trim() ||
      new TextDecoder().decode(o.stderr).trim();
  };
  const owner = new Deno.Command("chown", { args: ["postgres", dir] }).outputSync();
  assert(owner.success, "chown to postgres");
  const init = await asPg(`${pgbin}/initdb -D ${data} -A trust`);
  assert(init.success, new TextDecoder().decode(init.stderr));
  const started = await asPg(
    `${WORKLOADS}/sessionexec ${pgbin}/postgres -D ${data} -k ${dir} -p 5432 ` +
      `-c listen_addresses= </dev/null >${dir}/log 2>&1 &`,
  );
  assert(started.success);
  let pid = 0;
  try {
    await until(
      "postmaster.pid",
      () => readText(`${data}/postmaster.pid`).includes("ready"),
      30_000,
    );
    pid = Number(readText(`${data}/postmaster.pid`).split("\n")[0]);
    await psql("create table t(n int)");
    await psql("insert into t select generate_series(1, 1000)");
    assertEquals(await psql("select count(*) from t"), "1000");
    // Its long-lived workers (a backend or autovacuum worker may come and
    // go around the dump).
    const named = (p: number) =>
      childrenOf(p).filter((c) =>
        /checkpointer|background writer|walwriter|launcher/.test(readText(`/proc/${c}/cmdline`))
      );
    const workers = named(pid);
    assert(workers.length >= 3, `postgres workers: ${workers}`);
    const d = await runCkpt(["dump", "-t", String(pid), "-D", `${images}/img`]);
    assertEquals(d.code, 0, `dump failed: ${d.stderr}`);
    await until(`pid ${pid} free`, () => gone(pid) && workers.every(gone));
    const r = await runCkpt(["restore", "-D", `${images}/img`, "-d"]);
    assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
    for (const w of workers) assert(childrenOf(pid).includes(w), `worker ${w} is back`);
    assertEquals(await psql("select sum(n) from t"), "500500");
    await psql("insert into t values (1001)");
    assertEquals(await psql("select count(*) from t"), "1001");
  } finally {
    if (pid) {
      for (const c of childrenOf(pid)) await killAndForget(c);
      await killAndForget(pid);
    }
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(images, { recursive: true });
    removeSegmentsOf("postgres");
  }
});

/** System V segments of `user` nobody has attached (a killed postmaster's). */
function removeSegmentsOf(user: string): void {
  const uid = readText("/etc/passwd").split("\n").find((l) => l.startsWith(`${user}:`))
    ?.split(":")[2];
  for (const line of readText("/proc/sysvipc/shm").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    // key shmid perms size cpid lpid nattch uid …
    if (f.length > 7 && f[7] === uid && f[6] === "0") {
      new Deno.Command("ipcrm", { args: ["-m", f[1]] }).outputSync();
    }
  }
}
