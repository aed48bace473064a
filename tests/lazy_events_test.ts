// restore --lazy-pages while the program changes its memory: it discards a
// range, moves one, forks — right after the restore, while most of its
// 256 MiB is still to come — and checks what it reads there, at once and once
// every page is in.
import { assert, assertEquals, assertMatch } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import {
  gone,
  killAndForget,
  readText,
  startSession,
  tempDir,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";

const MIB = 256;

/** Restores a dumped lazymut told to do `what`; returns its result line and
 * the page server's account of what it followed. */
async function mutated(what: string) {
  const dir = await tempDir(`lazy-${what}`);
  const log = `${dir}/log`;
  let pid = 0;
  try {
    const p = startSession([`${WORKLOADS}/lazymut`, dir, String(MIB)]);
    pid = p.pid;
    await until("workload start", () => readText(log).includes("start"));
    const d = await runCkpt(["dump", "-t", String(pid), "-D", `${dir}/images`]);
    assertEquals(d.code, 0, `dump failed: ${d.stderr}`);
    await p.status;
    await until(`pid ${pid} free`, () => gone(pid));
    // Only the restored process sees this.
    Deno.writeTextFileSync(`${dir}/go`, what);
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d", "--lazy-pages", "-v4"]);
    assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
    // restore -d has returned: every page is in.
    Deno.writeTextFileSync(`${dir}/all`, "");
    await until("result", () => /^result /m.test(readText(log)), 30_000);
    const result = /^result .*$/m.exec(readText(log))![0];
    const served = /pages served in [^\n]*/.exec(r.stderr)?.[0] ?? "";
    const n = (re: RegExp) => Number(re.exec(served)?.[1] ?? NaN);
    return {
      result,
      served,
      forks: n(/(\d+) fork\(s\) followed/),
      remaps: n(/(\d+) remap\(s\)/),
      dropped: n(/(\d+) bytes discarded or unmapped first/),
    };
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("restore --lazy-pages: memory discarded with MADV_DONTNEED reads zeros, then and later", async () => {
  const m = await mutated("dontneed");
  assertMatch(m.result, /ok=1/, m.result);
  // Discarded before the page server copied it: the event was followed,
  // not just the pages already in zapped.
  assert(m.dropped > 0, `the discard came after every page was in: ${m.served}`);
});

Deno.test("restore --lazy-pages: a range moved with mremap keeps its content, then and later", async () => {
  const m = await mutated("mremap");
  assertMatch(m.result, /ok=1/, m.result);
  assert(m.remaps >= 1, `no remap followed: ${m.served}`);
});

Deno.test("restore --lazy-pages: a child forked before the pages are in sees all of its memory", async () => {
  const m = await mutated("fork");
  assertMatch(m.result, /ok=1/, m.result);
  assertMatch(m.result, /child_status=0 /, m.result);
  assert(m.forks >= 1, `no fork followed: ${m.served}`);
});
