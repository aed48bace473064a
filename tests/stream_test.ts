// dump --stream | restore --stream: migration with no image directory, and a
// stream damaged in transit refused before anything runs.
import { assert, assertEquals, assertMatch } from "../src/deps/std_assert.ts";
import { CKPT, runCkpt } from "./helpers/ckpt.ts";
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

function sh(script: string) {
  return new Deno.Command("sh", {
    args: ["-c", script],
    env: { DENO_BIN: Deno.execPath(), CKPT },
    stdout: "piped",
    stderr: "piped",
  }).output();
}

const reports = (log: string) => [...readText(log).matchAll(/sum=(\w+) want=(\w+) off=(\d+)/g)];

Deno.test("dump --stream piped into restore --stream moves a process", async () => {
  const dir = await tempDir("stream");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/counter`, dir, "16"]);
  const staged = () =>
    [...Deno.readDirSync(Deno.env.get("TMPDIR") ?? "/tmp")].filter((e) =>
      e.name.startsWith("ckpt-stream-")
    ).map((e) => e.name).sort();
  const before = staged();
  try {
    await until("started", () => readText(log).includes("start"));
    const o = await sh(`"$CKPT" dump -t ${p.pid} --stream | "$CKPT" restore --stream -d`);
    const err = new TextDecoder().decode(o.stderr);
    assertEquals(o.code, 0, err);
    assertMatch(err, new RegExp(`dumped pid ${p.pid} to stdout`));
    await p.status;
    assert(alive(p.pid), "restored");
    Deno.kill(p.pid, "SIGUSR1");
    await until("report", () => reports(log).length === 1);
    const [m] = reports(log);
    assertEquals(m[1], m[2], "memory checksum matches");
    assertEquals(staged(), before, "no staged images left behind");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a stream damaged in transit is refused and starts nothing", async () => {
  const dir = await tempDir("stream-bad");
  const p = startSession([`${WORKLOADS}/counter`, dir, "4"]);
  try {
    await until("started", () => readText(`${dir}/log`).includes("start"));
    const d = await sh(`"$CKPT" dump -t ${p.pid} --stream > ${dir}/s`);
    assertEquals(d.code, 0, new TextDecoder().decode(d.stderr));
    await p.status;
    await until("pid free", () => gone(p.pid));
    const bytes = await Deno.readFile(`${dir}/s`);
    bytes[Math.floor(bytes.length / 2)] ^= 0x40;
    await Deno.writeFile(`${dir}/s`, bytes);
    const r = await sh(`"$CKPT" restore --stream -d < ${dir}/s`);
    const err = new TextDecoder().decode(r.stderr);
    assertEquals(r.code, 1);
    assertEquals(err.trim().split("\n").length, 1, err);
    assertMatch(err, /^ckpt: the image stream: .*(damaged|checksum)/);
    assert(gone(p.pid), "nothing was started");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--stream and -D exclude each other", async () => {
  const r = await runCkpt(["dump", "-t", "1", "--stream", "-D", "/tmp/x"]);
  assertEquals(r.code, 2);
  const s = await runCkpt(["restore", "--stream", "-D", "/tmp/x"]);
  assertEquals(s.code, 2);
});
