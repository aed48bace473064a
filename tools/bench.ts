// deno task bench: dump and restore times of real processes next to the
// machine's own ceilings measured in the same run (dd writing the same amount
// to the same tmpfs, and an in-memory copy), as medians and ratios.
// Usage: deno task bench [--runs N] [--sizes 16,1024]
import { parseArgs } from "../src/deps/std_cli.ts";

const args = parseArgs(Deno.args, { string: ["runs", "sizes", "dir"] });
const RUNS = Number(args.runs ?? 3);
const SIZES = String(args.sizes ?? "16,1024").split(",").map(Number);
const BASE = String(args.dir ?? "/dev/shm");
const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const ckpt = `${root}/ckpt`;
const wl = `${root}/zig-out/workloads`;
const env = { DENO_BIN: Deno.execPath() };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)];

async function sh(cmd: string, a: string[]): Promise<{ ms: number; out: string }> {
  const t = performance.now();
  const o = await new Deno.Command(cmd, { args: a, env, stdout: "piped", stderr: "piped" })
    .output();
  const ms = performance.now() - t;
  if (o.code !== 0) throw new Error(`${cmd} ${a.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
  return { ms, out: new TextDecoder().decode(o.stdout) };
}

async function gone(pid: number) {
  for (;;) {
    try {
      Deno.statSync(`/proc/${pid}`);
      await sleep(10);
    } catch {
      return;
    }
  }
}

function ddMs(dir: string, mib: number): Promise<number> {
  return sh("dd", ["if=/dev/zero", `of=${dir}/dd.out`, "bs=1M", `count=${mib}`, "conv=fdatasync"])
    .then((r) => {
      Deno.removeSync(`${dir}/dd.out`);
      return r.ms;
    });
}

function memcpyMs(mib: number): number {
  const src = new Uint8Array(mib << 20).fill(1);
  const dst = new Uint8Array(mib << 20).fill(2);
  const t = performance.now();
  dst.set(src);
  return performance.now() - t;
}

interface Row {
  mib: number;
  dd: number;
  memcpy: number;
  dumpWall: number;
  dumpCore: number;
  frozen: number;
  restoreWall: number;
  restoreCore: number;
  startup: number;
}

async function benchSize(mib: number): Promise<Row> {
  const dir = await Deno.makeTempDir({ dir: BASE, prefix: "ckpt-bench-" });
  const s: Record<keyof Omit<Row, "mib">, number[]> = {
    dd: [],
    memcpy: [],
    dumpWall: [],
    dumpCore: [],
    frozen: [],
    restoreWall: [],
    restoreCore: [],
    startup: [],
  };
  try {
    for (let i = 0; i < RUNS; i++) {
      s.dd.push(await ddMs(dir, mib));
      s.memcpy.push(memcpyMs(Math.min(mib, 1024)));
      s.startup.push((await sh(ckpt, ["--version"])).ms);
      const work = `${dir}/w${i}`;
      Deno.mkdirSync(work);
      const child = new Deno.Command(`${wl}/sessionexec`, {
        args: [`${wl}/counter`, work, String(mib)],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      for (;;) {
        try {
          if (Deno.readTextFileSync(`${work}/log`).includes("start")) break;
        } catch { /* not yet */ }
        await sleep(20);
      }
      const d = await sh(ckpt, ["dump", "-t", String(child.pid), "-D", `${work}/img`, "--json"]);
      const dj = JSON.parse(d.out);
      await child.status;
      await gone(child.pid);
      const r = await sh(ckpt, ["restore", "-D", `${work}/img`, "-d", "--json"]);
      const rj = JSON.parse(r.out);
      s.dumpWall.push(d.ms);
      s.dumpCore.push(dj.totalMs);
      s.frozen.push(dj.frozenMs);
      s.restoreWall.push(r.ms);
      s.restoreCore.push(rj.ms);
      Deno.kill(child.pid, "SIGKILL");
      await gone(child.pid);
      Deno.removeSync(work, { recursive: true });
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  const m = (k: keyof typeof s) => median(s[k]);
  return {
    mib,
    dd: m("dd"),
    memcpy: m("memcpy") * (mib > 1024 ? mib / 1024 : 1),
    dumpWall: m("dumpWall"),
    dumpCore: m("dumpCore"),
    frozen: m("frozen"),
    restoreWall: m("restoreWall"),
    restoreCore: m("restoreCore"),
    startup: m("startup"),
  };
}

const f = (ms: number) => `${ms.toFixed(1)} ms`.padStart(10);
const x = (a: number, b: number) => `${(a / b).toFixed(2)}x`.padStart(7);
console.log(`ckpt bench: ${RUNS} runs per size, medians; images and dd on ${BASE} (tmpfs)`);
console.log(
  "size      dd         memcpy     dump(ckpt) /dd    frozen     restore(ckpt) /dd   dump(wall)  restore(wall)  start-up",
);
for (const mib of SIZES) {
  const r = await benchSize(mib);
  console.log(
    `${String(mib).padStart(5)} MiB ${f(r.dd)} ${f(r.memcpy)} ${f(r.dumpCore)} ${
      x(r.dumpCore, r.dd)
    } ${f(r.frozen)} ${f(r.restoreCore)} ${x(r.restoreCore, r.dd)} ${f(r.dumpWall)} ${
      f(r.restoreWall)
    } ${f(r.startup)}`,
  );
}
console.log(
  "dump/restore(ckpt): time inside ckpt (from --json); wall: whole command incl. Deno start-up (last column).",
);
