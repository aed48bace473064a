// deno task bench: dump and restore times of real processes next to the
// machine's own ceilings measured in the same run — dd writing the same
// amount to the same tmpfs, and an in-memory copy — as medians and ratios.
// Usage: deno task bench [--runs N] [--only 16m,1g,tree,threads,fds,migrate,tcp,rpc] [--dir /dev/shm]
import { parseArgs } from "../src/deps/std_cli.ts";

const args = parseArgs(Deno.args, { string: ["runs", "only", "dir"] });
const RUNS = Number(args.runs ?? 3);
const BASE = String(args.dir ?? "/dev/shm");
const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const ckpt = `${root}/ckpt`;
const wl = `${root}/zig-out/workloads`;
const env = { DENO_BIN: Deno.execPath() };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)];

interface Shape {
  key: string;
  label: string;
  mib: number; // memory the workload touches, in total
  argv: (dir: string) => string[];
}
const SHAPES: Shape[] = [
  { key: "16m", label: "1 process, 16 MiB", mib: 16, argv: (d) => [`${wl}/counter`, d, "16"] },
  { key: "1g", label: "1 process, 1 GiB", mib: 1024, argv: (d) => [`${wl}/counter`, d, "1024"] },
  {
    key: "tree",
    label: "16 processes x 16 MiB",
    mib: 256,
    argv: (d) => [`${wl}/fanout`, d, "16", "16", "1"],
  },
  {
    key: "threads",
    label: "1 process, 64 threads",
    mib: 16,
    argv: (d) => [`${wl}/fanout`, d, "1", "16", "64"],
  },
  {
    // A server's descriptors: 10,000 UNIX sockets, 16 timerfds and 16
    // eventfds, all in one epoll set.
    key: "fds",
    label: "10k sockets in 1 epoll",
    mib: 1,
    argv: (d) => [`${wl}/epollbench`, d, "10000"],
  },
];
const only = args.only
  ? String(args.only).split(",")
  : [...SHAPES.map((s) => s.key), "migrate", "tcp", "rpc"];

async function sh(cmd: string, a: string[]): Promise<{ ms: number; out: string }> {
  const t = performance.now();
  const o = await new Deno.Command(cmd, { args: a, env, stdout: "piped", stderr: "piped" })
    .output();
  const ms = performance.now() - t;
  if (o.code !== 0) throw new Error(`${cmd} ${a.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
  return { ms, out: new TextDecoder().decode(o.stdout) };
}

function exists(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

function treePids(pid: number): number[] {
  let kids: number[] = [];
  try {
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      kids = kids.concat(
        Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/children`).trim().split(/\s+/)
          .filter(Boolean).map(Number),
      );
    }
  } catch { /* gone */ }
  return [pid, ...kids.flatMap(treePids)];
}

async function gone(pids: number[]) {
  while (pids.some(exists)) await sleep(10);
}

async function ddMs(dir: string, mib: number): Promise<number> {
  const r = await sh("dd", ["if=/dev/zero", `of=${dir}/dd.out`, "bs=1M", `count=${mib}`]);
  Deno.removeSync(`${dir}/dd.out`);
  return r.ms;
}

function memcpyMs(mib: number): number {
  const src = new Uint8Array(mib << 20).fill(1);
  const dst = new Uint8Array(mib << 20).fill(2);
  const t = performance.now();
  dst.set(src);
  return performance.now() - t;
}

async function start(shape: Shape, work: string): Promise<number> {
  Deno.mkdirSync(work, { recursive: true });
  const child = new Deno.Command(`${wl}/sessionexec`, {
    args: shape.argv(work),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.status.then(() => {}); // reaped when it ends
  for (;;) {
    try {
      if (Deno.readTextFileSync(`${work}/log`).includes("start")) return child.pid;
    } catch { /* not yet */ }
    await sleep(20);
  }
}

type Sample = Record<
  | "dd"
  | "memcpy"
  | "dump"
  | "frozen"
  | "restore"
  | "dumpWall"
  | "restoreWall"
  | "lazyFirst"
  | "lazyTotal",
  number
>;

async function once(shape: Shape, dir: string, i: number): Promise<Sample> {
  const work = `${dir}/w${i}`;
  const dd = await ddMs(dir, shape.mib);
  const memcpy = memcpyMs(shape.mib);
  // --leave-running: how long the tree is frozen.
  const pid0 = await start(shape, `${work}/a`);
  const lr = JSON.parse(
    (await sh(ckpt, ["dump", "-t", `${pid0}`, "-D", `${work}/a/img`, "-R", "--json"])).out,
  );
  const pids0 = treePids(pid0);
  for (const p of pids0) Deno.kill(p, "SIGKILL");
  await gone(pids0);
  Deno.removeSync(`${work}/a`, { recursive: true });
  // dump (kill), then restore.
  const pid = await start(shape, `${work}/b`);
  const pids = treePids(pid);
  const d = await sh(ckpt, ["dump", "-t", `${pid}`, "-D", `${work}/b/img`, "--json"]);
  await gone(pids);
  const r = await sh(ckpt, ["restore", "-D", `${work}/b/img`, "-d", "--json"]);
  for (const p of treePids(pid)) Deno.kill(p, "SIGKILL");
  await gone(pids);
  // The same images again, lazily: time until the tree runs, and until every
  // page is in (when restore -d returns).
  const lz = JSON.parse(
    (await sh(ckpt, ["restore", "-D", `${work}/b/img`, "-d", "--lazy-pages", "--json"])).out,
  );
  for (const p of treePids(pid)) Deno.kill(p, "SIGKILL");
  await gone(pids);
  Deno.removeSync(work, { recursive: true });
  return {
    dd,
    memcpy,
    dump: JSON.parse(d.out).totalMs,
    frozen: lr.frozenMs,
    restore: JSON.parse(r.out).ms,
    dumpWall: d.ms,
    restoreWall: r.ms,
    lazyFirst: lz.firstInstructionMs,
    lazyTotal: lz.ms,
  };
}

const f = (ms: number) => `${ms.toFixed(1)} ms`.padStart(10);
const x = (a: number, b: number) => `${(a / b).toFixed(2)}x`.padStart(7);
const startup = median(
  await Promise.all([0, 1, 2].map(() => sh(ckpt, ["--version"]).then((r) => r.ms))),
);
console.log(`ckpt bench: ${RUNS} runs per shape, medians; images and dd on ${BASE} (tmpfs)`);
console.log(
  `ckpt start-up (./ckpt --version, Deno launch): ${startup.toFixed(1)} ms, not included below`,
);
console.log(
  `${"workload".padEnd(24)}${"dd".padStart(10)}${"memcpy".padStart(11)}${"dump".padStart(11)}${
    "/dd".padStart(8)
  }${"restore".padStart(11)}${"/dd".padStart(8)}${"frozen -R".padStart(11)}${
    "lazy run".padStart(11)
  }${"lazy all".padStart(11)}`,
);
for (const shape of SHAPES.filter((s) => only.includes(s.key))) {
  const dir = await Deno.makeTempDir({ dir: BASE, prefix: "ckpt-bench-" });
  const samples: Sample[] = [];
  try {
    for (let i = 0; i < RUNS; i++) samples.push(await once(shape, dir, i));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  const m = (k: keyof Sample) => median(samples.map((s) => s[k]));
  console.log(
    `${shape.label.padEnd(24)}${f(m("dd"))} ${f(m("memcpy"))} ${f(m("dump"))} ${
      x(m("dump"), m("dd"))
    } ${f(m("restore"))} ${x(m("restore"), m("dd"))} ${f(m("frozen"))} ${f(m("lazyFirst"))} ${
      f(m("lazyTotal"))
    }`,
  );
}
console.log(
  "dump/restore: time inside ckpt (--json); frozen -R: time the tree is stopped by dump --leave-running.",
);
console.log(
  "lazy run: restore --lazy-pages until the tree runs (time to first instruction, image checks " +
    "included); lazy all: until every page is in.",
);

// Live migration with pre-dump: the 1 GiB workload pre-dumped while it runs,
// then dumped with --prev-images-dir (it is frozen for the whole dump, as it
// is killed after), then restored from the chain.
async function migrateOnce(dir: string, i: number) {
  const work = `${dir}/m${i}`;
  const shape = SHAPES.find((s) => s.key === "1g")!;
  const pid = await start(shape, work);
  const pre = JSON.parse(
    (await sh(ckpt, ["pre-dump", "-t", `${pid}`, "-D", `${work}/pre`, "--json"])).out,
  );
  await sleep(200); // the program runs on and writes some memory
  const d = JSON.parse(
    (await sh(ckpt, [
      "dump",
      "-t",
      `${pid}`,
      "-D",
      `${work}/img`,
      "--prev-images-dir",
      "../pre",
      "--json",
    ])).out,
  );
  await gone([pid]);
  const r = JSON.parse((await sh(ckpt, ["restore", "-D", `${work}/img`, "-d", "--json"])).out);
  Deno.kill(pid, "SIGKILL");
  await gone([pid]);
  Deno.removeSync(work, { recursive: true });
  return {
    preFrozen: pre.frozenMs,
    preTotal: pre.totalMs,
    preBytes: pre.pagesBytes,
    dump: d.totalMs,
    dumpBytes: d.pagesBytes,
    restore: r.ms,
  };
}

if (only.includes("migrate")) {
  const dir = await Deno.makeTempDir({ dir: BASE, prefix: "ckpt-bench-" });
  const runs: Awaited<ReturnType<typeof migrateOnce>>[] = [];
  try {
    for (let i = 0; i < RUNS; i++) runs.push(await migrateOnce(dir, i));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  const m = (k: keyof (typeof runs)[0]) => median(runs.map((s) => s[k]));
  const kib = (b: number) => `${(b / 1024).toFixed(0)} KiB`;
  console.log(
    `pre-dump, 1 GiB: frozen ${m("preFrozen").toFixed(1)} ms of ${m("preTotal").toFixed(1)} ms (${
      kib(m("preBytes"))
    }); then dump --prev-images-dir: ${m("dump").toFixed(1)} ms, all ` +
      `frozen (${kib(m("dumpBytes"))} written since); restore from the chain ${
        m("restore").toFixed(1)
      } ms`,
  );
}

// Live TCP connections (--tcp-established): an echo server holding CONNS
// connections from a client outside the tree, which sends a line on each
// in turn and waits for its echo. The frozen time of dump -R (the lock,
// each connection read in repair mode, the unlock) must not grow with the
// server's memory; the client's longest wait for an echo across a dump
// and restore is the downtime it sees.
const CONNS = 100;

async function echoStart(work: string, mib: number): Promise<{ pid: number; port: number }> {
  Deno.mkdirSync(work, { recursive: true });
  const child = new Deno.Command(`${wl}/sessionexec`, {
    args: [
      "python3",
      `${root}/tests/workloads/net/tcp_echo.py`,
      `${work}/port`,
      "127.0.0.1",
      `${mib}`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.status.then(() => {});
  for (;;) {
    try {
      const port = Number(Deno.readTextFileSync(`${work}/port`));
      if (port) return { pid: child.pid, port };
    } catch { /* not yet */ }
    await sleep(20);
  }
}

function clientStart(port: number, log: string, conns: number): Deno.ChildProcess {
  const c = new Deno.Command("python3", {
    args: [`${root}/tests/peers/tcp_counter.py`, "127.0.0.1", `${port}`, log, `${conns}`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  c.status.then(() => {});
  return c;
}

function counted(log: string): { n: number; gap: number; ok: boolean } {
  try {
    const m = /^ok (\d+) maxgap_ms ([\d.]+)/.exec(Deno.readTextFileSync(log));
    return m ? { n: Number(m[1]), gap: Number(m[2]), ok: true } : { n: -1, gap: -1, ok: false };
  } catch {
    return { n: 0, gap: 0, ok: true };
  }
}

async function until(pred: () => boolean) {
  const end = Date.now() + 30_000;
  while (!pred()) {
    if (Date.now() > end) throw new Error("bench: timed out");
    await sleep(20);
  }
}

async function tcpOnce(dir: string, i: number, mib: number, conns: number) {
  const work = `${dir}/t${i}-${mib}-${conns}`;
  const { pid, port } = await echoStart(work, mib);
  const log = `${work}/client.log`;
  const client = conns ? clientStart(port, log, conns) : undefined;
  try {
    if (client) await until(() => counted(log).n > 20);
    const lr = JSON.parse(
      (await sh(ckpt, [
        "dump",
        "-t",
        `${pid}`,
        "-D",
        `${work}/r`,
        "-R",
        "--json",
        "--tcp-established",
      ]))
        .out,
    );
    if (!client) return { frozen: lr.frozenMs, downtime: 0 };
    await sleep(300);
    const before = counted(log).gap;
    await sh(ckpt, ["dump", "-t", `${pid}`, "-D", `${work}/img`, "--tcp-established"]);
    await gone([pid]);
    await sh(ckpt, ["restore", "-D", `${work}/img`, "-d", "--tcp-established"]);
    const n = counted(log).n;
    await until(() => counted(log).n > n + 10);
    const after = counted(log);
    if (!after.ok) throw new Error("bench: the client saw an error");
    return { frozen: lr.frozenMs, downtime: Math.max(before, after.gap) };
  } finally {
    if (client) {
      try {
        client.kill("SIGKILL");
      } catch { /* gone */ }
    }
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
    await gone([pid]);
    Deno.removeSync(work, { recursive: true });
  }
}

if (only.includes("tcp")) {
  const dir = await Deno.makeTempDir({ dir: BASE, prefix: "ckpt-bench-" });
  try {
    const rows: string[] = [];
    for (const [mib, conns] of [[16, 0], [16, CONNS], [512, 0], [512, CONNS]]) {
      const runs = [];
      for (let i = 0; i < RUNS; i++) runs.push(await tcpOnce(dir, i, mib, conns));
      const fr = median(runs.map((r) => r.frozen)), dt = median(runs.map((r) => r.downtime));
      rows.push(
        `  ${`${mib} MiB, ${conns} connections`.padEnd(28)} frozen -R ${
          fr.toFixed(1).padStart(7)
        } ms` +
          (conns ? `   peer's downtime (dump + restore) ${dt.toFixed(0).padStart(5)} ms` : ""),
      );
    }
    console.log(`TCP --tcp-established (echo server, a client outside the tree):`);
    for (const r of rows) console.log(r);
    console.log(
      "  frozen -R includes locking every connection (nftables), reading each in repair mode and " +
        "unlocking; downtime: the client's longest wait for one echo, ckpt start-up included.",
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

// CRIU's RPC (what runc, podman and Kubernetes go through) against the CLI:
// the same 16 MiB dump and restore both ways, alternating (tools/rpc_bench.ts).
if (only.includes("rpc")) {
  const root = new URL("..", import.meta.url).pathname;
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${root}tools/rpc_bench.ts`, String(Math.max(RUNS, 3)), "16"],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(o.success ? o.stdout : o.stderr).trimEnd();
  console.log("CRIU RPC (ckpt swrk, as runc sends DUMP/RESTORE) against the CLI, 16 MiB:");
  for (const line of text.split("\n")) console.log(`  ${line}`);
}
