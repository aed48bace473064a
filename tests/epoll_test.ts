// epoll sets restored with every registration as the kernel keys it (file
// and fd number), checked by what the restored program's epoll_wait and
// epoll_ctl say; a target no fd of the tree holds is refused at dump.
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

/** The registrations of epoll fd n of pid: fd number, events, data. */
function registrations(pid: number, n: number): string[] {
  return readText(`/proc/${pid}/fdinfo/${n}`).split("\n").filter((l) => l.startsWith("tfd:"))
    .map((l) => l.trim().split(/\s+/).slice(0, 6).join(" ")).sort();
}

Deno.test("epoll: ET, ONESHOT, EXCLUSIVE, data, a closed but registered target, a nested epoll and a target added by the other task sharing it", async () => {
  const dir = await tempDir("epoll");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/epollwl`, dir]);
  let child = 0;
  try {
    await until("workload ready", () => readText(log).includes("ready"));
    const m = /ready epfd=(\d+) child=(\d+)/.exec(readText(log))!;
    const epfd = Number(m[1]);
    child = Number(m[2]);
    const before = registrations(p.pid, epfd);
    // a0 (ET, edge pending), the fired one-shot (only its private bits
    // left), the pipe under a number now holding another file, the nested
    // epoll, EXCLUSIVE, RDHUP, and twice the same number: the parent's a0
    // and the child's socket.
    assertEquals(before.length, 7, before.join("\n"));
    assert(before.some((l) => / events: 40000000 data: abcd$/.test(l)), "one-shot disarmed");
    assert(before.some((l) => / events: 10000019 /.test(l)), "EPOLLEXCLUSIVE");

    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
    await p.status;
    await until("pids free", () => gone(p.pid) && gone(child));
    const show = await runCkpt(["show", `${dir}/images/files.img`]);
    assertStringIncludes(show.stdout, "FILE_EPOLL");

    const res = await runCkpt(["restore", "-D", `${dir}/images`, "-d"]);
    assertEquals(res.code, 0, `restore failed: ${res.stderr}`);
    assert(alive(p.pid) && alive(child));
    assertEquals(registrations(p.pid, epfd), before, "every registration as it was");

    Deno.kill(p.pid, "SIGUSR1");
    await until("checks", () => readText(log).includes("check "), 15_000);
    const check = /check (.*)/.exec(readText(log))![1];
    for (const kv of check.split(" ")) assertEquals(kv.split("=")[1], "ok", `${kv} (${check})`);
  } finally {
    await killAndForget(p.pid);
    if (child) await killAndForget(child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("epoll: a registered target whose file only a socket queue holds is refused at dump, the tree running on", async () => {
  const dir = await tempDir("epoll-orphan");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/epollwl`, dir, "orphan"]);
  try {
    await until("workload ready", () => readText(log).includes("ready"));
    const m = /ready epfd=(\d+) tfd=(\d+)/.exec(readText(log))!;
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(r.code, 1, r.stderr);
    assertStringIncludes(
      r.stderr,
      `fd ${m[1]} of pid ${p.pid} (anon_inode:[eventpoll]): target fd ${m[2]} `,
    );
    assertStringIncludes(r.stderr, "still registered but that fd was closed");
    assertStringIncludes(r.stderr, "EPOLL_CTL_DEL");
    assert(alive(p.pid), "the tree runs on");
    assert(
      ![...Deno.readDirSync(dir)].some((e) => e.name === "images"),
      "nothing left written, not even the directory the dump made",
    );
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});
