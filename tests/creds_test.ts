// Tasks of an ordinary user, and threads with credentials of their own:
// dumped and restored as root, each thread comes back with its own uids,
// gids, groups and capabilities, and runs on.
import { assert, assertEquals, assertGreater } from "../src/deps/std_assert.ts";
import {
  killAndForget,
  readText,
  startSession,
  tempDir,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";
import { dumpTree, restoreTree } from "./helpers/tree.ts";
import { type TempUser, tempUser } from "./helpers/user.ts";

async function withUser<T>(fn: (u: TempUser) => Promise<T>): Promise<T> {
  const u = await tempUser();
  try {
    return await fn(u);
  } finally {
    await u.remove();
  }
}

function tids(pid: number): number[] {
  return Deno.readDirSync(`/proc/${pid}/task`).map((e) => +e.name).toArray().sort((a, b) => a - b);
}

function uidLine(pid: number, tid: number): string {
  return /^Uid:\s*(.*)$/m.exec(readText(`/proc/${pid}/task/${tid}/status`))?.[1] ?? "";
}

Deno.test("a multi-threaded process running as another user restores, dumped and restored as root", async () => {
  await withUser(async (u) => {
    // The log in the user's own directory; the images in root's (restore
    // refuses images a directory above them lets the user swap).
    const dir = await tempDir("user-threads");
    const log = `${u.dir}/log`;
    const p = startSession(u.as([`${WORKLOADS}/threads`, log]));
    const reports = () =>
      [...readText(log).matchAll(/^report (.*)$/gm)].map((m) =>
        m[1].split(" ").map((x) => x.split(":").map(Number) as [number, number])
      );
    try {
      await until("threads start", () => readText(log).includes("start"));
      await until("8 threads", () => tids(p.pid).length === 8);
      const before = tids(p.pid);
      for (const t of before) {
        assertEquals(uidLine(p.pid, t), `${u.uid}\t${u.uid}\t${u.uid}\t${u.uid}`);
      }
      Deno.kill(p.pid, "SIGUSR1");
      await until("first report", () => reports().length === 1);

      await dumpTree(p.pid, p.status, `${dir}/images`, []);
      await restoreTree(`${dir}/images`);
      assertEquals(tids(p.pid), before, "same TIDs");
      for (const t of before) {
        assertEquals(uidLine(p.pid, t), `${u.uid}\t${u.uid}\t${u.uid}\t${u.uid}`, `thread ${t}`);
      }
      await new Promise((r) => setTimeout(r, 100));
      Deno.kill(p.pid, "SIGUSR1");
      await until("report after restore", () => reports().length === 2);
      const [r1, r2] = reports();
      for (let i = 0; i < 7; i++) assertGreater(r2[i][1], r1[i][1], `thread ${r2[i][0]} runs on`);
    } finally {
      await killAndForget(p.pid);
      await Deno.remove(dir, { recursive: true });
    }
  });
});

Deno.test("threads with credentials of their own keep them: uid, gid, groups, capabilities per thread", async () => {
  await withUser(async (u) => {
    const dir = await tempDir("cred-threads");
    const log = `${dir}/log`;
    const p = startSession([`${WORKLOADS}/credthreads`, log, String(u.uid), String(u.gid)]);
    const creds = () =>
      [...readText(log).matchAll(/^cred (\w+) (.*)$/gm)].map((m) => `${m[1]} ${m[2]}`);
    try {
      await until("4 threads", () => readText(log).includes("start") && tids(p.pid).length === 4);
      await new Promise((r) => setTimeout(r, 50));
      Deno.kill(p.pid, "SIGUSR1");
      await until("creds before", () => creds().length === 4);
      const before = creds().sort();
      const user = before.find((l) => l.startsWith("user "))!;
      assert(user.includes(`Uid=${u.uid} ${u.uid} ${u.uid} ${u.uid}`), user);
      assert(user.includes(`Groups=${u.gid + 1}`), user);
      assert(before.find((l) => l.startsWith("mixed "))!.includes(`Uid=0 ${u.uid} 0 ${u.uid}`));
      assert(before.find((l) => l.startsWith("capped "))!.includes("CapEff=0000000000000400"));

      await dumpTree(p.pid, p.status, `${dir}/images`, []);
      await restoreTree(`${dir}/images`);
      Deno.kill(p.pid, "SIGUSR1");
      await until("creds after", () => creds().length === 8);
      assertEquals(creds().slice(4).sort(), before, "every thread sees its own credentials again");
    } finally {
      await killAndForget(p.pid);
      await Deno.remove(dir, { recursive: true });
    }
  });
});
