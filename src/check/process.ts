// Probes that act on a real process, as dump does: seize and stop it, copy a
// descriptor out of it, read its memory. The process is a short-lived
// `sleep` started here and killed afterwards.
import { describe } from "../errors.ts";
import {
  ERRNO,
  fd,
  NativeError,
  ptrace,
  PTRACE_EVENT_STOP,
  vmRead,
  wait,
  WALL,
  WNOHANG,
} from "../native/mod.ts";
import { hex } from "../util/units.ts";
import { readMaps } from "./maps.ts";
import { pollSync } from "../util/sleep.ts";
import { failed, probe, type ProbeResult, type ProbeSpec, yes } from "./types.ts";

const PTRACE: ProbeSpec = {
  name: "ptrace seize",
  required: true,
  why: "to freeze every thread of the tree without signals it could notice",
};
const PIDFD: ProbeSpec = {
  name: "pidfd_getfd",
  required: true,
  why: "to copy a task's descriptors out and inspect sockets, pipes and files",
};
const VM_READ: ProbeSpec = {
  name: "process_vm_readv",
  required: true,
  why: "to copy the tree's memory quickly",
};

interface Sleeper {
  pid: number;
  stop(): Promise<void>;
}

async function startSleeper(): Promise<Sleeper> {
  const child = new Deno.Command("sleep", {
    args: ["5"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const sleeper = {
    pid: child.pid,
    async stop() {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.stdout.cancel();
      await child.status;
    },
  };
  // The pid exists from fork on; wait for exec so what we probe is `sleep`.
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    const comm = Deno.readTextFileSync(`/proc/${child.pid}/comm`).trim();
    if (comm === "sleep") return sleeper;
    await new Promise((r) => setTimeout(r, 2));
  }
  await sleeper.stop();
  throw new Error(`test process ${child.pid} did not exec sleep within 3 s`);
}

function permissionHint(err: unknown): string | undefined {
  if (err instanceof NativeError && (err.errno === ERRNO.EPERM || err.errno === ERRNO.EACCES)) {
    return "needs CAP_SYS_PTRACE, and Yama's kernel.yama.ptrace_scope must not be 3";
  }
  return undefined;
}

// Kept fully synchronous: the stop must be collected by this thread before
// anything else (Deno's own child reaper included) gets to run.
function seizeAndStop(pid: number): string {
  ptrace.seize(pid);
  let stopped = false;
  try {
    ptrace.interrupt(pid);
    const st = pollSync(2000, () => wait(pid, WALL | WNOHANG) ?? undefined);
    if (!st) throw new Error(`pid ${pid} did not stop within 2 s of PTRACE_INTERRUPT`);
    if (!st.stopped || st.event !== PTRACE_EVENT_STOP) {
      throw new Error(`pid ${pid} reported wait status ${hex(st.raw)}, not a ptrace stop`);
    }
    stopped = true;
  } finally {
    // Detach needs a stopped tracee; otherwise it stays attached until the
    // caller kills it, which ends the trace just as well.
    if (stopped) ptrace.detach(pid);
  }
  return `seized pid ${pid} (sleep), stopped it with PTRACE_INTERRUPT, detached`;
}

function copyFd(pid: number): string {
  const pidfd = fd.pidfdOpen(pid);
  try {
    const copy = fd.pidfdGetfd(pidfd, 1, `fd 1 of pid ${pid}`);
    try {
      const theirs = Deno.readLinkSync(`/proc/${pid}/fd/1`);
      const ours = Deno.readLinkSync(`/proc/self/fd/${copy}`);
      if (theirs !== ours) throw new Error(`the copy is ${ours}, the original ${theirs}`);
      return `copied fd 1 (${ours}) out of pid ${pid}`;
    } finally {
      fd.close(copy);
    }
  } finally {
    fd.close(pidfd);
  }
}

function readElfHeader(pid: number): string {
  const exe = Deno.readLinkSync(`/proc/${pid}/exe`);
  const first = readMaps(pid).find((m) => m.name === exe && m.offset === 0n);
  if (!first) throw new Error(`no mapping of ${exe} at offset 0 in pid ${pid}`);
  const bytes = vmRead(pid, first.start, 64);
  const elf = bytes.length === 64 && bytes[0] === 0x7f && bytes[1] === 0x45 &&
    bytes[2] === 0x4c && bytes[3] === 0x46;
  if (!elf) throw new Error(`read ${bytes.length} bytes at ${hex(first.start)}, not an ELF header`);
  return `read the ELF header of ${exe} at ${hex(first.start)} in pid ${pid}`;
}

export async function processProbes(): Promise<ProbeResult[]> {
  let sleeper: Sleeper;
  try {
    sleeper = await startSleeper();
  } catch (err) {
    const why = `could not start a test process: ${describe(err)}`;
    return [failed(PTRACE, why), failed(PIDFD, why), failed(VM_READ, why)];
  }
  try {
    const pid = sleeper.pid;
    return [
      await probe(PTRACE, () => yes(seizeAndStop(pid)), permissionHint),
      await probe(PIDFD, () => yes(copyFd(pid)), permissionHint),
      await probe(VM_READ, () => yes(readElfHeader(pid)), permissionHint),
    ];
  } finally {
    await sleeper.stop();
  }
}
