// deno task demo: checks the machine, starts a small workload, checkpoints it,
// shows the images, restores it live and shows it carrying on — same PID, same
// memory, same open files.
const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const ckpt = `${root}/ckpt`;
const workloads = `${root}/zig-out/workloads`;
const env = { DENO_BIN: Deno.execPath() };
const dec = new TextDecoder();

function say(s: string) {
  console.log(`\n\x1b[1m== ${s}\x1b[0m`);
}

async function run(args: string[], show = true): Promise<{ code: number; out: string }> {
  console.log(`$ ckpt ${args.join(" ")}`);
  const o = await new Deno.Command(ckpt, { args, env, stdout: "piped", stderr: "piped" }).output();
  const out = dec.decode(o.stdout);
  if (show) Deno.stdout.writeSync(new TextEncoder().encode(out));
  Deno.stderr.writeSync(o.stderr);
  return { code: o.code, out };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const readLog = (p: string) => {
  try {
    return Deno.readTextFileSync(p);
  } catch {
    return "";
  }
};

async function waitFor(pred: () => boolean, ms = 10_000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("demo: the workload did not answer in time");
    await sleep(20);
  }
}

const dir = await Deno.makeTempDir({ prefix: "ckpt-demo-" });
const log = `${dir}/log`;
let pid = 0;
try {
  say("What this machine offers ckpt");
  await run(["check"]);

  say(
    "Starting a workload: 64 MiB of patterned memory, a log, a file at offset 7, a SIGUSR1 handler",
  );
  const child = new Deno.Command(`${workloads}/sessionexec`, {
    args: [`${workloads}/counter`, dir, "64"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  pid = child.pid;
  await waitFor(() => readLog(log).includes("start"));
  Deno.kill(pid, "SIGUSR1");
  await waitFor(() => readLog(log).includes("report"));
  console.log(readLog(log).trimEnd());

  say(`Checkpointing pid ${pid} (and killing it)`);
  const d = await run(["dump", "-t", String(pid), "-D", `${dir}/images`]);
  if (d.code !== 0) throw new Error("demo: dump failed");
  await child.status;
  while (true) {
    try {
      Deno.statSync(`/proc/${pid}`);
      await sleep(20);
    } catch {
      break;
    }
  }
  console.log(`pid ${pid} is gone`);

  say("The images (ckpt show, inventory and page summary)");
  const s = await run(["show", "--compact", `${dir}/images`], false);
  const shown = JSON.parse(s.out);
  console.log(
    JSON.stringify(shown.images?.[0]?.payload ?? shown, null, 2).split("\n").slice(0, 20).join(
      "\n",
    ),
  );
  console.log("tasks:", JSON.stringify(shown.tasks));

  say("Restoring it");
  const r = await run(["restore", "-D", `${dir}/images`, "-d"]);
  if (r.code !== 0) throw new Error("demo: restore failed");
  const before = readLog(log).length;
  Deno.kill(pid, "SIGUSR1");
  await waitFor(() => readLog(log).length > before);
  console.log(readLog(log).trimEnd());
  console.log(
    `\npid ${pid} is back: same checksum of its memory, offset still 7, ymm still holds its value, ticks carry on.`,
  );
} finally {
  if (pid) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
  await Deno.remove(dir, { recursive: true });
}
