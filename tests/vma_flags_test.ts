// madvise state and locked memory of a real program across dump and restore:
// every region's VmFlags in smaps, VmLck, mlockall(MCL_FUTURE), and what the
// advice does (a child forked after restore sees MADV_WIPEONFORK memory as
// zeros and has no MADV_DONTFORK memory) — also when the pages were taken
// with --leave-running or a pre-dump, which read from fork copies that lack
// exactly that memory, and with --lazy-pages.
import { assert, assertEquals, assertStringIncludes } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
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

const REGIONS = [
  "dontfork",
  "wipe",
  "dontdump",
  "nohuge",
  "merge",
  "seq",
  "rand",
  "lock",
  "lockonfault",
  "sealed",
  "huge",
];
const EXPECT: Record<string, string> = {
  dontfork: "dc",
  wipe: "wf",
  dontdump: "dd",
  nohuge: "nh",
  merge: "mg",
  seq: "sr",
  rand: "rr",
  lock: "lo",
  lockonfault: "lf",
  sealed: "sl",
  huge: "hg",
};

/** Each region's VmFlags (by the address the workload logged), and VmLck. */
function flagsOf(pid: number, log: string): Record<string, string> {
  const addrs = Object.fromEntries(
    [...readText(log).split("\n")[0].matchAll(/(\w+)=0x([0-9a-f]+)/g)].map((
      m,
    ) => [m[1], BigInt(`0x${m[2]}`)]),
  );
  const out: Record<string, string> = {};
  let lo = 0n, hi = 0n;
  for (const line of readText(`/proc/${pid}/smaps`).split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (m) [lo, hi] = [BigInt(`0x${m[1]}`), BigInt(`0x${m[2]}`)];
    else if (line.startsWith("VmFlags:")) {
      for (const r of REGIONS) if (addrs[r] >= lo && addrs[r] < hi) out[r] = line.slice(8).trim();
    }
  }
  out.VmLck = /VmLck:\s+(\d+ kB)/.exec(readText(`/proc/${pid}/status`))![1];
  return out;
}

async function lineAfter(pid: number, log: string, sig: Deno.Signal, prefix: string) {
  const n = readText(log).split("\n").filter((l) => l.startsWith(prefix)).length;
  Deno.kill(pid, sig);
  await until(
    `a ${prefix} line`,
    () => readText(log).split("\n").filter((l) => l.startsWith(prefix)).length > n,
  );
  return readText(log).split("\n").filter((l) => l.startsWith(prefix))[n];
}

async function checkRestored(
  pid: number,
  log: string,
  before: Record<string, string>,
  future = false,
) {
  assertEquals(flagsOf(pid, log), before, "VmFlags and VmLck as at dump");
  assertEquals(
    await lineAfter(pid, log, "SIGUSR1", "report"),
    `report ok=1 newlocked=${future ? 1 : 0}`,
    "every region holds its bytes; new mappings are locked as before",
  );
  assertEquals(
    await lineAfter(pid, log, "SIGUSR2", "child"),
    "child wipe=zero dontfork=unmapped",
  );
  await until("parent line", () => readText(log).includes("parent wipe="));
  assertStringIncludes(readText(log), "parent wipe=data");
}

async function start(dir: string, future: boolean) {
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/madv`, log, ...(future ? ["future"] : [])]);
  await until("madv start", () => readText(log).includes("start"));
  const before = flagsOf(p.pid, log);
  for (const r of REGIONS) {
    assert(before[r]?.split(" ").includes(EXPECT[r]), `${r}: ${before[r]}`);
  }
  return { p, log, before };
}

async function dumpKilled(pid: number, status: Promise<unknown>, args: string[]) {
  const d = await runCkpt(["dump", "-t", String(pid), ...args]);
  assertEquals(d.code, 0, d.stderr);
  await status;
  await until(`pid ${pid} free`, () => gone(pid));
}

Deno.test("madvise flags, mlock, mseal and mlockall(MCL_FUTURE) are restored, and behave", async () => {
  const dir = await tempDir("madv");
  const { p, log, before } = await start(dir, true);
  try {
    assertEquals(await lineAfter(p.pid, log, "SIGUSR1", "report"), "report ok=1 newlocked=1");
    await dumpKilled(p.pid, p.status, ["-D", `${dir}/images`]);
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(r.code, 0, r.stderr);
    assert(alive(p.pid));
    await checkRestored(p.pid, log, before, true);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--leave-running and pre-dump read MADV_DONTFORK/WIPEONFORK memory from the task, not a fork copy", async () => {
  const dir = await tempDir("madv-copies");
  const { p, log, before } = await start(dir, false);
  try {
    const r1 = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/running`, "-R", "-v"]);
    assertEquals(r1.code, 0, r1.stderr);
    assertStringIncludes(r1.stderr, "MADV_DONTFORK or MADV_WIPEONFORK memory");
    assert(alive(p.pid), "left running");
    const pre = await runCkpt(["pre-dump", "-t", String(p.pid), "-D", `${dir}/pre`]);
    assertEquals(pre.code, 0, pre.stderr);
    await dumpKilled(p.pid, p.status, ["-D", `${dir}/images`, "--prev-images-dir", "../pre"]);

    for (const images of [`${dir}/images`, `${dir}/running`]) {
      const r = await runCkpt(["restore", "-D", images, "-d"]);
      assertEquals(r.code, 0, r.stderr);
      await checkRestored(p.pid, log, before);
      await killAndForget(p.pid);
    }
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--lazy-pages fills locked memory before the tree runs and restores its flags", async () => {
  const dir = await tempDir("madv-lazy");
  const { p, log, before } = await start(dir, false);
  try {
    await dumpKilled(p.pid, p.status, ["-D", `${dir}/images`]);
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d", "--lazy-pages"]);
    assertEquals(r.code, 0, r.stderr);
    await checkRestored(p.pid, log, before);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
