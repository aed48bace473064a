// Terminals: pseudo-terminal pairs the tree holds come back with their
// number, settings, window size, queued bytes, controlling terminal and
// foreground group, checked by what the restored programs then do (a shell
// reading lines, a raw reader, a real tmux server and its pane); a
// --shell-job comes back on the restoring shell's terminal, run under a real
// pseudo-terminal; what cannot be restored is refused with its reason.
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { CKPT, ROOT, runCkpt } from "./helpers/ckpt.ts";
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

const PTYPAIR = `${ROOT}/tests/workloads/ptypair.py`;
const PTYSHELL = `${ROOT}/tests/workloads/ptyshell.py`;
const JOBLOOP = `${ROOT}/tests/workloads/jobloop.py`;

const stat = (pid: number) => readText(`/proc/${pid}/stat`).split(") ")[1]?.split(" ") ?? [];
/** tty_nr and tpgid of /proc/PID/stat. */
const ctty = (pid: number) => ({ ttyNr: stat(pid)[4], tpgid: stat(pid)[5] });
const exists = (path: string) => {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
};
const write = (path: string, bytes: string) =>
  Deno.writeFileSync(path, new TextEncoder().encode(bytes));

interface Pair {
  root: number;
  child: number;
  name: string;
  state: string;
}

/** ptypair.py with input typed that its child has not read, and output the
 * child wrote that it has not read. */
async function primed(
  dir: string,
  mode: "canon" | "raw",
  typed: string,
  extra: string[] = [],
): Promise<Pair> {
  const p = startSession(["python3", PTYPAIR, dir, mode, ...extra]);
  await until("pty workload start", () => readText(`${dir}/log`).includes("start"));
  const [, name, child] = /name=(\S+) child=(\d+)/.exec(readText(`${dir}/log`))!;
  await until("the child ready", () => exists(`${dir}/ready`));
  write(`${dir}/in`, typed);
  await until("typed input written", () => exists(`${dir}/in.done`));
  return { root: p.pid, child: Number(child), name, state: await askState(dir) };
}

async function askState(dir: string): Promise<string> {
  try {
    Deno.removeSync(`${dir}/state`);
  } catch { /* first time */ }
  write(`${dir}/ask`, "");
  await until("terminal state", () => readText(`${dir}/state`) !== "");
  return readText(`${dir}/state`);
}

/** Lets the child read, types `more`, and returns what the master reads. */
async function finish(dir: string, more: string): Promise<string> {
  write(`${dir}/gate`, "");
  await new Promise((r) => setTimeout(r, 200));
  write(`${dir}/in`, more);
  await new Promise((r) => setTimeout(r, 300));
  write(`${dir}/read`, "");
  await until("master read", () => readText(`${dir}/out`) !== "");
  return readText(`${dir}/out`);
}

async function dumpAndRestore(dir: string, pair: Pair, extra: string[] = []): Promise<void> {
  const r = await runCkpt(["dump", "-t", String(pair.root), "-D", `${dir}/img`, ...extra]);
  assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
  await until(`pid ${pair.root} free`, () => gone(pair.root) && gone(pair.child));
  const rr = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
  assertEquals(rr.code, 0, `restore failed: ${rr.stderr}`);
}

Deno.test("a pseudo-terminal pair the tree holds comes back with its number, settings, window size, controlling terminal, /dev/tty and the bytes queued both ways (a typed line and a partial one)", async () => {
  const dir = await tempDir("pty-canon");
  let pair: Pair | undefined;
  try {
    pair = await primed(dir, "canon", "queued1\npart");
    const before = ctty(pair.child);
    assertEquals(before.ttyNr !== "0", true, "the child has the slave as controlling terminal");
    await dumpAndRestore(dir, pair);
    assertEquals(ctty(pair.child), before, "controlling terminal and foreground group");
    assertEquals(Deno.readLinkSync(`/proc/${pair.child}/fd/0`), pair.name);
    assertEquals(Deno.readLinkSync(`/proc/${pair.child}/fd/3`), "/dev/tty");
    assertEquals(await askState(dir), pair.state, "termios and window size");
    assertStringIncludes(pair.state, "ws=(33, 101, 0, 0)");
    const out = await finish(dir, "ial\n");
    // Queued before the dump: the child's first line and the echo of what
    // was typed; then what the child made of the two lines, one of them
    // finished after the restore.
    assert(out.startsWith("hello-before\r\nqueued1\r\npart"), JSON.stringify(out));
    assertStringIncludes(out, `got:queued1:${pair.name}\r\nvia-tty:queued1\r\n`);
    assertStringIncludes(out, `got:partial:${pair.name}\r\nvia-tty:partial\r\n`);
  } finally {
    if (pair) await killAndForget(pair.root);
    if (pair) await killAndForget(pair.child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("packet mode, the lock and exclusive mode come back, and are as they were after a refused dump", async () => {
  const dir = await tempDir("pty-modes");
  let pair: Pair | undefined;
  try {
    pair = await primed(dir, "canon", "queued1\npart", ["modes", "block"]);
    assertStringIncludes(pair.state, "pkt=1 lock=1 mexcl=0 sexcl=1");
    const refused = await runCkpt(["dump", "-t", String(pair.root), "-D", `${dir}/img`]);
    assertEquals(refused.code, 1);
    assertEquals(await askState(dir), pair.state, "put back as it was");
    await killAndForget(pair.root);
    await killAndForget(pair.child);
    Deno.removeSync(dir, { recursive: true });
    Deno.mkdirSync(dir);
    pair = await primed(dir, "canon", "queued1\npart", ["modes"]);
    await dumpAndRestore(dir, pair);
    assertEquals(await askState(dir), pair.state);
    const out = await finish(dir, "ial\n");
    assert(out.startsWith("hello-before\r\nqueued1\r\npart"), JSON.stringify(out));
    assertStringIncludes(out, `got:partial:${pair.name}\r\n`);
    assert(!out.includes("<status>"), "no packet status came up");
  } finally {
    if (pair) await killAndForget(pair.root);
    if (pair) await killAndForget(pair.child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a raw-mode terminal's queued input comes back byte for byte (^C, DEL, CR, ^D, ^S not interpreted)", async () => {
  const dir = await tempDir("pty-raw");
  let pair: Pair | undefined;
  try {
    pair = await primed(dir, "raw", "\x03\x7fab\r\x04\x13");
    await dumpAndRestore(dir, pair);
    assertEquals(alive(pair.child), true);
    const out = await finish(dir, "");
    assertEquals(out, "hello-before\nraw:037f61620d0413\nvia-tty:7\n");
  } finally {
    if (pair) await killAndForget(pair.root);
    if (pair) await killAndForget(pair.child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dump --leave-running puts a terminal's queued bytes back: the running program reads them as if nothing happened", async () => {
  const dir = await tempDir("pty-leave");
  let pair: Pair | undefined;
  try {
    pair = await primed(dir, "canon", "queued1\npart");
    const r = await runCkpt(["dump", "-t", String(pair.root), "-D", `${dir}/img`, "-R"]);
    assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
    assertEquals(await askState(dir), pair.state);
    const out = await finish(dir, "ial\n");
    assert(out.startsWith("hello-before\r\nqueued1\r\npart"), JSON.stringify(out));
    assertStringIncludes(out, `got:queued1:${pair.name}\r\n`);
    assertStringIncludes(out, `got:partial:${pair.name}\r\n`);
  } finally {
    if (pair) await killAndForget(pair.root);
    if (pair) await killAndForget(pair.child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a refused dump puts a terminal's queued bytes back and the tree runs on as if nothing happened", async () => {
  const dir = await tempDir("pty-refused");
  let pair: Pair | undefined;
  try {
    pair = await primed(dir, "canon", "queued1\npart", ["block"]);
    const r = await runCkpt(["dump", "-t", String(pair.root), "-D", `${dir}/img`]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /\/dev\/pts\/\d+ of this pseudo-terminal was never opened/);
    assertEquals(await askState(dir), pair.state);
    const out = await finish(dir, "ial\n");
    assert(out.startsWith("hello-before\r\nqueued1\r\npart"), JSON.stringify(out));
    assertStringIncludes(out, `got:queued1:${pair.name}\r\n`);
    assertStringIncludes(out, `got:partial:${pair.name}\r\n`);
  } finally {
    if (pair) await killAndForget(pair.root);
    if (pair) await killAndForget(pair.child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a pseudo-terminal whose slave a process outside the tree also holds is refused, naming it", async () => {
  const dir = await tempDir("pty-holder");
  let pair: Pair | undefined;
  let holder: Deno.ChildProcess | undefined;
  try {
    pair = await primed(dir, "canon", "");
    const hold = `import os, time
fd = os.open("${pair.name}", os.O_RDWR | os.O_NOCTTY)
print(fd, flush=True)
time.sleep(60)`;
    holder = new Deno.Command("python3", { args: ["-c", hold], stdout: "piped", stderr: "null" })
      .spawn();
    const reader = holder.stdout.getReader();
    const fd = new TextDecoder().decode((await reader.read()).value).trim();
    reader.releaseLock();
    const r = await runCkpt(["dump", "-t", String(pair.root), "-D", `${dir}/img`]);
    assertEquals(r.code, 1);
    assertStringIncludes(
      r.stderr,
      `${pair.name} of this pseudo-terminal is also held outside the tree, by pid ${holder.pid} (python3) fd ${fd}`,
    );
    assertEquals(alive(pair.child), true);
  } finally {
    if (holder) {
      holder.kill("SIGKILL");
      await holder.status;
      await holder.stdout.cancel().catch(() => {});
    }
    if (pair) await killAndForget(pair.root);
    if (pair) await killAndForget(pair.child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restore refuses a pseudo-terminal whose number another terminal took meanwhile, naming the holder", async () => {
  const dir = await tempDir("pty-taken");
  let pair: Pair | undefined;
  let holder: Deno.ChildProcess | undefined;
  try {
    pair = await primed(dir, "canon", "");
    const r = await runCkpt(["dump", "-t", String(pair.root), "-D", `${dir}/img`]);
    assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
    await until(`pid ${pair.root} free`, () => gone(pair!.root) && gone(pair!.child));
    const n = pair.name.replace("/dev/pts/", "");
    const hold = `import fcntl, os, struct, time
fds = []
while True:
    m = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    if struct.unpack("i", fcntl.ioctl(m, 0x80045430, b"    "))[0] == ${n}:
        break
    fds.append(m)
for f in fds:
    os.close(f)
print("holding", flush=True)
time.sleep(60)`;
    holder = new Deno.Command("python3", { args: ["-c", hold], stdout: "piped", stderr: "null" })
      .spawn();
    const reader = holder.stdout.getReader();
    const { value } = await reader.read();
    assertStringIncludes(new TextDecoder().decode(value), "holding");
    const rr = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
    assertEquals(rr.code, 1);
    assertMatch(
      rr.stderr,
      new RegExp(`/dev/pts/${n} is taken by another terminal \\(pid ${holder.pid}, python3\\)`),
    );
    assertEquals(gone(pair.root), true, "nothing was left running");
    holder.kill("SIGKILL");
    await holder.status;
    reader.releaseLock();
    holder.stdout.cancel().catch(() => {});
    holder = undefined;
    const ok = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
    assertEquals(ok.code, 0, `restore failed: ${ok.stderr}`);
    assertEquals(Deno.readLinkSync(`/proc/${pair.child}/fd/0`), pair.name);
  } finally {
    if (holder) {
      try {
        holder.kill("SIGKILL");
      } catch { /* exited */ }
      await holder.status;
    }
    if (pair) await killAndForget(pair.root);
    if (pair) await killAndForget(pair.child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a terminal whose master is outside the tree is refused without --shell-job; with it, restore needs a terminal", async () => {
  const dir = await tempDir("pty-outside");
  // The master stays here; the sleep, reparented to init, gets reaped.
  const prog = `import os, subprocess, time
m, s = os.openpty()
if os.fork() == 0:
    p = subprocess.Popen(["${WORKLOADS}/sessionexec", "sleep", "300"], stdin=s, stdout=s, stderr=s)
    print(p.pid, os.ttyname(s), flush=True)
    os._exit(0)
os.wait()
time.sleep(300)`;
  const outer = new Deno.Command("python3", { args: ["-c", prog], stdout: "piped", stderr: "null" })
    .spawn();
  const reader = outer.stdout.getReader();
  let pid = 0;
  try {
    // One line, however the pipe splits it.
    let line = "";
    while (!line.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      line += new TextDecoder().decode(value);
    }
    const [p, name] = line.trim().split(" ");
    pid = Number(p);
    await until("sleep started", () => readText(`/proc/${pid}/comm`).startsWith("sleep"));
    const r = await runCkpt(["dump", "-t", p, "-D", `${dir}/img`]);
    assertEquals(r.code, 1);
    assertStringIncludes(
      r.stderr,
      `fd 0 of pid ${pid} (${name}) is ${name}, a terminal whose other side is outside the tree; ` +
        `a job of a shell can be dumped with --shell-job`,
    );
    assertEquals(alive(pid), true, "the refused tree runs on");
    const j = await runCkpt(["dump", "-t", p, "-D", `${dir}/img`, "-j"]);
    assertEquals(j.code, 0, `dump -j failed: ${j.stderr}`);
    await until(`pid ${pid} free`, () => gone(pid));
    // Started without a controlling terminal whatever the test runner has.
    const rr = await new Deno.Command(`${WORKLOADS}/sessionexec`, {
      args: [CKPT, "restore", "-D", `${dir}/img`, "-j", "-d"],
      env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    assertEquals(rr.code, 1);
    assertStringIncludes(
      new TextDecoder().decode(rr.stderr),
      "restore --shell-job from a terminal (ckpt has no controlling terminal)",
    );
    assertEquals(gone(pid), true);
  } finally {
    outer.kill("SIGKILL");
    await outer.status;
    reader.releaseLock();
    await outer.stdout.cancel().catch(() => {});
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

/** A shell on a pseudo-terminal of its own (ptyshell.py), typed into and
 * read from through pipes. */
class Terminal {
  readonly child: Deno.ChildProcess;
  private out = "";
  private readonly done: Promise<void>;
  private readonly w: WritableStreamDefaultWriter<Uint8Array>;

  constructor() {
    const child = new Deno.Command("python3", {
      args: [PTYSHELL],
      env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1", TERM: "dumb" },
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.child = child;
    this.w = child.stdin.getWriter();
    this.done = (async () => {
      const dec = new TextDecoder();
      for await (const b of child.stdout) this.out += dec.decode(b);
    })();
  }

  async type(s: string): Promise<void> {
    await this.w.write(new TextEncoder().encode(s));
  }

  async see(what: string | RegExp, timeoutMs = 20_000): Promise<string> {
    await until(`terminal to show ${what}`, () => {
      return typeof what === "string" ? this.out.includes(what) : what.test(this.out);
    }, timeoutMs);
    return this.out;
  }

  async close(): Promise<void> {
    await this.w.close().catch(() => {});
    try {
      this.child.kill("SIGKILL");
    } catch { /* exited */ }
    await this.child.status;
    await this.done.catch(() => {});
  }
}

const children = (pid: number) =>
  readText(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/).filter(Boolean).map(Number);

Deno.test("--shell-job under a real terminal: the restored job gets the restoring shell's terminal, the foreground, its terminal settings and a SIGWINCH for the new size", async () => {
  const dir = await tempDir("shell-job");
  const term = new Terminal();
  let job = 0;
  try {
    await term.see("PROMPT> ");
    const bash = children(term.child.pid)[0];
    await term.type(`python3 ${JOBLOOP} ${dir}\n`);
    await until("the job", () => children(bash).length === 1);
    job = children(bash)[0];
    await term.see("winch:40x100");
    await term.type("ping1\n");
    await term.see(/pong:ping1:\/dev\/pts\/\d+:echo=0/);
    const shellTty = ctty(bash).ttyNr;
    const before = ctty(job);
    assertEquals(before.ttyNr, shellTty);
    assertEquals(before.tpgid, String(job), "the job is in the foreground");

    const r = await runCkpt(["dump", "-t", String(job), "-j", "-D", `${dir}/img`]);
    assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
    await term.see("Killed");
    await until(`pid ${job} free`, () => gone(job));
    // The shell has its terminal back as it likes it; make it another size.
    await term.type("stty rows 30 cols 90; echo resized\n");
    await term.see("\nresized");
    await term.type(`${CKPT} restore -j -D ${dir}/img\n`);
    await until("the job restored", () => alive(job) && stat(job)[0] === "S");
    const terminal = Deno.readLinkSync(`/proc/${bash}/fd/0`);
    for (const n of [0, 1, 2]) assertEquals(Deno.readLinkSync(`/proc/${job}/fd/${n}`), terminal);
    assertEquals(
      ctty(job),
      { ttyNr: shellTty, tpgid: String(job) },
      "its terminal, in the foreground",
    );
    assertEquals(stat(job)[3], stat(bash)[3], "in the shell's session");
    await term.see("winch:30x90", 10_000);
    await term.type("ping2\n");
    await term.see(`pong:ping2:${terminal}:echo=0`, 10_000);
    await term.type("\x03");
    await term.see("KeyboardInterrupt");
    await term.type("echo rc=$?\n");
    await term.see("rc=130");
  } finally {
    await term.close();
    if (job) await killAndForget(job);
    await Deno.remove(dir, { recursive: true });
  }
});

async function ensureTmux(): Promise<void> {
  const has = await new Deno.Command("sh", { args: ["-c", "command -v tmux"], stdout: "null" })
    .output();
  if (has.success) return;
  const apt = await new Deno.Command("apt-get", {
    args: ["install", "-y", "--no-install-recommends", "tmux"],
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!apt.success) throw new Error(`cannot install tmux: ${new TextDecoder().decode(apt.stderr)}`);
}

Deno.test("a tmux server and its pane keep running and drawing after restore; ^C reaches the pane's foreground job and the shell answers send-keys", async () => {
  await ensureTmux();
  const dir = await tempDir("tmux");
  const sock = `${dir}/sock`;
  const env = { TERM: "xterm", SHELL: "/bin/bash" };
  const tmux = async (...args: string[]) => {
    const o = await new Deno.Command("tmux", {
      args: ["-S", sock, ...args],
      env,
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    if (!o.success) {
      throw new Error(`tmux ${args.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
    }
    return new TextDecoder().decode(o.stdout);
  };
  const jobs = async () =>
    [...(await tmux("capture-pane", "-p")).matchAll(/^job (\d+)$/gm)].map((m) => Number(m[1]));
  let server = 0;
  const pids: number[] = [];
  try {
    const start = await new Deno.Command(`${WORKLOADS}/sessionexec`, {
      args: [
        "tmux",
        "-S",
        sock,
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-x",
        "80",
        "-y",
        "24",
        "env PS1='PANE> ' bash --norc --noprofile -i",
      ],
      env,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    assertEquals(start.success, true);
    server = Number((await tmux("display", "-p", "#{pid}")).trim());
    const paneTty = (await tmux("display", "-p", "#{pane_tty}")).trim();
    await until(
      "the pane's shell",
      async () => (await tmux("capture-pane", "-p")).includes("PANE>"),
    );
    await tmux(
      "send-keys",
      "sh -c 'i=0; while :; do i=$((i+1)); echo job $i; sleep 0.2; done'",
      "Enter",
    );
    await until("the job counting", async () => (await jobs()).length >= 2);
    const bash = Number((await tmux("display", "-p", "#{pane_pid}")).trim());
    const before = ctty(bash);
    const job = Number(before.tpgid);
    pids.push(bash, job);
    assert(
      job !== bash && readText(`/proc/${job}/cmdline`).startsWith("sh"),
      "the job is the pane's foreground group",
    );

    const r = await runCkpt(["dump", "-t", String(server), "-D", `${dir}/img`]);
    assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
    await until("the tree gone", () => gone(server) && gone(bash) && gone(job));
    const rr = await runCkpt(["restore", "-D", `${dir}/img`, "-d"]);
    assertEquals(rr.code, 0, `restore failed: ${rr.stderr}`);
    const last = Math.max(...await jobs());
    await until(
      "the job counting on, drawn in the pane",
      async () => Math.max(...await jobs()) >= last + 3,
    );
    assertEquals((await tmux("display", "-p", "#{pane_tty}")).trim(), paneTty);
    assertEquals(ctty(bash), before, "controlling terminal and foreground group");
    await tmux("send-keys", "C-c");
    await until("the job interrupted", () => gone(job));
    await tmux("send-keys", "echo done-$((6*7))", "Enter");
    await until(
      "the shell answers",
      async () => /^done-42$/m.test(await tmux("capture-pane", "-p")),
    );
    assertEquals(alive(bash), true);
  } finally {
    await tmux("kill-server").catch(() => {});
    for (const p of [server, ...pids]) if (p) await killAndForget(p);
    await Deno.remove(dir, { recursive: true });
  }
});
