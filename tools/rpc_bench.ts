// What the RPC path costs over the CLI: the same dump and restore of a
// ticker (16 MiB) through `./ckpt dump`/`./ckpt restore -d` and through
// `./ckpt swrk 3` (DUMP / RESTORE requests, as runc sends them), each
// measured from starting the ckpt process to its answer, alternating, as
// medians. Usage: deno run -A tools/rpc_bench.ts [ROUNDS] [MIB]
import { fd as fdops } from "../src/native/mod.ts";
import { openDir, RpcClient, T } from "../tests/helpers/criu_rpc.ts";
import { CKPT } from "../tests/helpers/ckpt.ts";
import { gone, startSession, until, WORKLOADS } from "../tests/helpers/proc.ts";

const rounds = Number(Deno.args[0] ?? 7);
const mib = Number(Deno.args[1] ?? 16);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function cli(args: string[]): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command(CKPT, {
    args,
    env: { DENO_BIN: Deno.execPath() },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return performance.now() - t0;
}

async function rpc(req: Parameters<RpcClient["call"]>[0]): Promise<number> {
  const t0 = performance.now();
  const c = await RpcClient.swrk();
  const resp = await c.call(req);
  const ms = performance.now() - t0;
  if (!resp.success) throw new Error(resp.crErrmsg);
  await c.close();
  return ms;
}

const dir = await Deno.makeTempDir({ prefix: "ckpt-rpcbench-" });
const times: Record<string, number[]> = {
  "cli dump": [],
  "rpc dump": [],
  "cli restore": [],
  "rpc restore": [],
};
try {
  for (let i = 0; i < rounds; i++) {
    for (const via of ["cli", "rpc"]) {
      const images = `${dir}/${via}-${i}`;
      Deno.mkdirSync(images, { mode: 0o700 });
      const p = startSession([`${WORKLOADS}/ticker`, String(mib)]);
      await until(
        "ticker",
        () => Deno.readTextFileSync(`/proc/${p.pid}/comm`).startsWith("ticker"),
      );
      await new Promise((r) => setTimeout(r, 100));
      const fd = openDir(images);
      times[`${via} dump`].push(
        via === "cli"
          ? await cli(["dump", "-t", String(p.pid), "-D", images])
          : await rpc({ type: T.DUMP, opts: { imagesDirFd: fd, pid: p.pid } }),
      );
      await p.status;
      await until("pid free", () => gone(p.pid));
      times[`${via} restore`].push(
        via === "cli"
          ? await cli(["restore", "-D", images, "-d"])
          : await rpc({ type: T.RESTORE, opts: { imagesDirFd: fd } }),
      );
      fdops.close(fd);
      Deno.kill(p.pid, "SIGKILL");
      await until("pid free", () => gone(p.pid));
    }
  }
  const min = (xs: number[]) => Math.min(...xs);
  for (const [k, v] of Object.entries(times)) {
    console.log(
      `${k.padEnd(12)} min ${min(v).toFixed(1)} ms, median ${median(v).toFixed(1)} ms`,
    );
  }
  const d = (f: (xs: number[]) => number, op: string) =>
    (f(times[`rpc ${op}`]) - f(times[`cli ${op}`])).toFixed(1);
  console.log(
    `RPC over CLI: dump ${d(min, "dump")} ms (min) ${d(median, "dump")} ms (median); ` +
      `restore ${d(min, "restore")} ms (min) ${d(median, "restore")} ms (median)`,
  );
  // The fixed cost alone: a ckpt that answers and exits, both ways.
  const idle = { cli: [] as number[], rpc: [] as number[] };
  for (let i = 0; i < rounds * 2; i++) {
    idle.cli.push(await cli(["--version"]));
    idle.rpc.push(await rpc({ type: T.VERSION }));
  }
  console.log(
    `start, answer, exit: CLI --version min ${min(idle.cli).toFixed(1)} median ${
      median(idle.cli).toFixed(1)
    } ms; swrk VERSION min ${min(idle.rpc).toFixed(1)} median ${median(idle.rpc).toFixed(1)} ms`,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
