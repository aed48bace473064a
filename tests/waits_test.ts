// Waits interrupted by the dump resume as waits: each thread of the workload
// sits in a timed wait when the tree is dumped, and after the restore each
// call returns what it would have had no checkpoint happened — a timeout,
// after the time it had to run, not EINTR — as the program measures itself.
import { assert, assertEquals } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import {
  killAndForget,
  readText,
  startSession,
  tempDir,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";
import { dumpTree, restoreTree } from "./helpers/tree.ts";

const MS = 2000;
const ETIMEDOUT = 110, EAGAIN = 11;
/** What each timed wait returns when its timeout runs out. */
const TIMED_OUT: Record<string, [number, number]> = {
  w_poll: [0, 0],
  w_ppoll: [0, 0],
  w_select: [0, 0],
  w_nanosleep: [0, 0],
  w_clock_nanosleep: [0, 0],
  w_futex: [-1, ETIMEDOUT],
  w_sigtimedwait: [-1, EAGAIN],
  w_epoll_wait: [0, 0],
  w_epoll_pwait: [0, 0],
};

function done(log: string) {
  return new Map(
    [...log.matchAll(
      /^done (\w+) ret=(-?\d+) errno=(\d+) elapsed=(\d+) lived=(-?\d+) since=(\d+)$/gm,
    )]
      .map((m) => [m[1], { ret: +m[2], errno: +m[3], elapsed: +m[4], lived: +m[5], since: +m[6] }]),
  );
}

function tids(log: string): Map<string, number> {
  return new Map([...log.matchAll(/^begin (\w+) tid=(\d+)$/gm)].map((m) => [m[1], +m[2]]));
}

Deno.test("timed waits (poll, ppoll, select, nanosleep, clock_nanosleep, futex, sigtimedwait, epoll_wait, epoll_pwait) resume with the time they had left", async () => {
  const dir = await tempDir("waits");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/waits`, log, String(MS)]);
  try {
    await until("start", () => readText(log).includes("start"));
    await new Promise((r) => setTimeout(r, 700));
    await dumpTree(p.pid, p.status, `${dir}/images`, []);
    const core = JSON.parse(
      (await runCkpt(["show", "--compact", `${dir}/images/core-${p.pid}.img`])).stdout,
    ).payload;
    type Sc = { action: string; remaining_ns?: string; remaining_from?: string };
    const state = new Map<number, Sc>(
      core.threads.map((
        t: { tid: number; syscall?: Sc },
      ) => [t.tid, t.syscall ?? { action: "none" }]),
    );
    const actions = [...state.values()].map((s) => s.action);
    assert(!actions.includes("eintr"), `no wait is ended with EINTR: ${actions}`);
    const tidOf = tids(readText(log));
    await new Promise((r) => setTimeout(r, 500)); // downtime the program must not count
    await restoreTree(`${dir}/images`);
    await until(
      "timed waits done",
      () => Object.keys(TIMED_OUT).every((n) => done(readText(log)).has(n)),
      5000,
    );
    const got = done(readText(log));
    for (const [name, [ret, errno]] of Object.entries(TIMED_OUT)) {
      const d = got.get(name)!;
      const sc = state.get(tidOf.get(name)!)!;
      assertEquals([d.ret, d.errno], [ret, errno], `${name} timed out (not EINTR)`);
      assert(d.elapsed >= MS + 500, `${name}: the downtime passed too (${d.elapsed} ms)`);
      // The whole timeout, as the program lived it: the program's own count
      // of the gap comes from its heartbeat thread, which may have been
      // frozen a little before or after this one.
      assert(
        d.lived >= MS - 100 && d.lived <= MS + 100,
        `${name} lived ${d.lived} ms of its ${MS} ms`,
      );
      if (sc.action === "restart") continue; // ppoll, select: the kernel's own
      assertEquals(sc.action, "reenter", name);
      assert(["timer", "written"].includes(sc.remaining_from!), `${name}: ${sc.remaining_from}`);
      // After the restore it waits just the time left the image holds.
      const left = Number(BigInt(sc.remaining_ns!) / 1_000_000n);
      assert(
        Math.abs(d.since - left) <= 25,
        `${name} waited ${d.since} ms after restore, ${left} ms were left`,
      );
    }
    assert(!got.has("w_poll_forever"), "the endless poll still waits");
    Deno.kill(p.pid, "SIGUSR1");
    await until("endless poll woken", () => done(readText(log)).has("w_poll_forever"));
    assertEquals(done(readText(log)).get("w_poll_forever")!.ret, 1);
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("with --leave-running the waits go on as if never frozen, epoll_wait and sigtimedwait included", async () => {
  const dir = await tempDir("waits-r");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/waits`, log, String(MS)]);
  try {
    await until("start", () => readText(log).includes("start"));
    await new Promise((r) => setTimeout(r, 700));
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`, "-R"]);
    assertEquals(r.code, 0, r.stderr);
    await until(
      "timed waits done",
      () => Object.keys(TIMED_OUT).every((n) => done(readText(log)).has(n)),
      5000,
    );
    for (const [name, [ret, errno]] of Object.entries(TIMED_OUT)) {
      const d = done(readText(log)).get(name)!;
      assertEquals([d.ret, d.errno], [ret, errno], `${name} timed out (not EINTR)`);
      // The deadline stays where it was: the frozen moment is part of the wait.
      assert(d.elapsed >= MS - 5 && d.elapsed <= MS + 150, `${name} took ${d.elapsed} ms`);
    }
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tail -f in its inotify mode follows its file after restore (it died of EINTR before)", async () => {
  const dir = await tempDir("tail");
  const input = `${dir}/in`, output = `${dir}/out`;
  await Deno.writeTextFile(input, "one\ntwo\n");
  const p = startSession(["sh", "-c", `exec tail -f ${input} > ${output}`]);
  try {
    await until("tail shows the file", () => readText(output) === "one\ntwo\n");
    assert(Deno.readLinkSync(`/proc/${p.pid}/exe`).endsWith("/tail"));
    const fds = [...Deno.readDirSync(`/proc/${p.pid}/fd`)].map((e) =>
      Deno.readLinkSync(`/proc/${p.pid}/fd/${e.name}`)
    );
    assert(fds.includes("anon_inode:inotify"), `tail uses inotify: ${fds}`);
    await dumpTree(p.pid, p.status, `${dir}/images`, []);
    await restoreTree(`${dir}/images`);
    await new Promise((r) => setTimeout(r, 300));
    assert(readText(`/proc/${p.pid}/stat`).includes("(tail)"), "tail still runs");
    await Deno.writeTextFile(input, "three\n", { append: true });
    await until("tail follows", () => readText(output) === "one\ntwo\nthree\n");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
