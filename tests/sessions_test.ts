// Sessions and process groups as shells and daemons build them: a daemon
// that double-forked under a child subreaper (its session's leader gone), a
// pipeline whose group leader is gone, a child left in its parent's old
// session by a later setsid. The restored tasks report what they see of
// themselves, and signals sent to their groups still reach them.
import { assert, assertEquals, assertThrows } from "../src/deps/std_assert.ts";
import { planSessions, SessionError, type SessionTask } from "../src/restore/sessions.ts";
import { gone, readText, startSession, tempDir, until, WORKLOADS } from "./helpers/proc.ts";
import { childrenOf, dumpTree, killAll, restoreTree, taskStat } from "./helpers/tree.ts";

function whoLines(log: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const x of log.matchAll(/^who (\w+) (.*)$/gm)) m.set(x[1], [...(m.get(x[1]) ?? []), x[2]]);
  return m;
}

Deno.test("a daemon's orphan in a session whose leader is gone, a group without its leader, and a child left behind by setsid", async () => {
  const dir = await tempDir("sessions");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/sessions`, log]);
  let pids: number[] = [];
  try {
    await until("tree built", () => readText(log).includes("ready"));
    const r = Object.fromEntries(
      [...readText(log).matchAll(/(\w+)=(\d+)/g)].map((m) => [m[1], +m[2]]),
    );
    pids = [r.daemon, r.member, r.late, r.stayer];
    // The shapes the test is about, as the kernel has them before the dump.
    assertEquals(taskStat(r.daemon).ppid, p.pid, "the daemon was reparented to the subreaper");
    assertEquals(taskStat(r.daemon).sid, r.daemon_sid);
    assert(r.daemon_sid !== p.pid && gone(r.daemon_sid), "its session's leader is gone");
    assertEquals(taskStat(r.member).pgid, r.leader);
    assert(gone(r.leader), "the group's leader is gone");
    assertEquals(taskStat(r.stayer).sid, p.pid);
    assertEquals(taskStat(r.late).sid, r.late);
    const names = ["root", "daemon", "member", "late", "stayer"];
    const all = [p.pid, ...pids];
    for (const pid of all) Deno.kill(pid, "SIGUSR1");
    await until("who before", () => names.every((n) => whoLines(readText(log)).has(n)));
    const before = whoLines(readText(log));
    const kids = childrenOf(p.pid);

    await dumpTree(p.pid, p.status, `${dir}/images`, pids);
    await restoreTree(`${dir}/images`);
    assertEquals(childrenOf(p.pid), kids, "the root has its children, and no helper is left");
    for (const pid of all) Deno.kill(pid, "SIGUSR1");
    await until(
      "who after",
      () => names.every((n) => whoLines(readText(log)).get(n)?.length === 2),
    );
    const after = whoLines(readText(log));
    // The root's own parent is whoever restores it.
    const self = (n: string, l: string) => n === "root" ? l.replace(/ ppid=\d+/, "") : l;
    for (const n of names) {
      assertEquals(
        self(n, after.get(n)![1]),
        self(n, before.get(n)![0]),
        `${n} sees itself as before`,
      );
    }
    assertEquals(readText(log).match(/^stray (\d+)$/gm), ["stray 0", "stray 0"], "nothing to reap");

    // The groups work as groups: a signal to each reaches its members.
    Deno.kill(-r.leader, "SIGUSR2");
    Deno.kill(-r.daemon_sid, "SIGUSR2");
    await until(
      "group signals",
      () => /usr2 member/.test(readText(log)) && /usr2 daemon/.test(readText(log)),
    );
    assert(!/usr2 (root|late|stayer)/.test(readText(log)), "and no one else");
  } finally {
    await killAll([p.pid, ...pids]);
    await Deno.remove(dir, { recursive: true });
  }
});

const T = (
  pid: number,
  ppid: number,
  sid: number,
  pgid: number,
  o: Partial<SessionTask> = {},
): SessionTask => ({
  pid,
  ppid,
  sid,
  pgid,
  zombie: false,
  exitStatus: 0,
  exitSignal: 17,
  comm: "t",
  subreaper: false,
  sharesFiles: false,
  ...o,
});

Deno.test("session plan: helpers where the kernel needs them, refusals where it cannot be done", () => {
  let free = 9000;
  const plan = (ts: SessionTask[]) => planSessions(ts, { shellJob: false, freePid: () => free++ });
  // A session whose leader is gone: a helper with the leader's pid forks it.
  const d = plan([T(1, 0, 1, 1, { subreaper: true }), T(5, 1, 50, 50)]);
  assertEquals(d.ghosts, [50]);
  const [g, t] = d.forks.get(1)!;
  assertEquals([g.kind, g.pid, g.setsid, t.pid, t.forker], ["ghost", 50, true, 5, 0]);
  // A group whose leader is gone: its first member forks a helper that makes it.
  const m = plan([T(1, 0, 1, 1), T(6, 1, 1, 60), T(7, 1, 1, 60)]);
  assertEquals(m.ghosts, [60]);
  assertEquals(m.self.get(6)!.joinPgid, 60);
  assertEquals(m.forks.get(6)![0].when, "prejoin");
  // Left in the parent's first session: forked before the parent's setsid.
  const e = plan([T(1, 0, 1, 1), T(12, 1, 12, 12), T(13, 12, 1, 1)]);
  assertEquals(e.forks.get(12)![0].when, "early");
  // A task joining its own child's group forks that child first.
  const j = plan([T(1, 0, 1, 1), T(20, 1, 1, 21), T(21, 20, 1, 21)]);
  assertEquals(j.forks.get(20)![0].when, "prejoin");
  // An orphan's session needs a subreaper parent to hand it back.
  assertThrows(() => plan([T(1, 0, 1, 1), T(5, 1, 50, 50)]), SessionError, "not a child subreaper");
  // A group whose leader left it to the others.
  assertThrows(
    () => plan([T(1, 0, 1, 1), T(2, 1, 1, 3), T(3, 1, 1, 2)]),
    SessionError,
    "has left",
  );
  // At dump: a leader that lives on outside the tree.
  assertThrows(
    () =>
      planSessions([T(1, 0, 1, 1, { subreaper: true }), T(5, 1, 50, 50)], {
        shellJob: false,
        freePid: () => 0,
        livesOutside: (pid) => pid === 50,
      }),
    SessionError,
    "outside the tree",
  );
});

Deno.test("session plan: damaged parentage is an error, not a crash", () => {
  const plan = (ts: SessionTask[]) => planSessions(ts, { shellJob: false, freePid: () => 9999 });
  for (
    const ts of [
      [T(1, 0, 1, 1), T(2, 3, 1, 1), T(3, 2, 1, 1)], // a cycle
      [T(1, 0, 1, 1), T(2, 1, 1, 1, { zombie: true }), T(3, 2, 1, 1)], // a zombie's child
      [T(1, 0, 1, 1), T(2, 2, 1, 1)], // its own parent
      [T(1, 0, 1, 1), T(2, 7, 1, 1)], // a parent not dumped
    ]
  ) assertThrows(() => plan(ts), SessionError, "is not a live task of the tree");
});
