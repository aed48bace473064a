// pidfd (pidfd_open, clone's CLONE_PIDFD): a handle on a process that the
// holder polls for its exit, waits on (waitid P_PIDFD) or signals. One of a
// task or zombie of the tree is opened again by its holder itself once every
// task exists (a pidfd names a live process, which ckpt cannot open before
// the tree is made): at its last stop, the holder is made to run
// pidfd_open and put the result at its fd number. One of a process that had
// exited and been reaped comes back as a pidfd of a throwaway child that has
// exited too: it polls readable and names no process, as before.
import { create } from "@bufbuild/protobuf";
import { FileKind, PidFdFileSchema } from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { anonfd } from "../native/anonfd.ts";
import { errnoText } from "../native/errno.ts";
import { fd as fdops, O, ptrace } from "../native/mod.ts";
import { readStat, readStatus, statusInts } from "../proc/status.ts";
import type { FileKindOps, RestoreContext } from "./kind.ts";

/** pidfd_open's flags: PIDFD_NONBLOCK is O_NONBLOCK, PIDFD_THREAD O_EXCL. */
const PIDFD_THREAD = 0o200;
const PIDFD_FLAGS = O.NONBLOCK | PIDFD_THREAD;
const SYS = { close: 3, fcntl: 72, dup3: 292, pidfd_open: 434 } as const;
const F_GETFD = 1;
const FD_CLOEXEC = 1;
const F_SETFL = 4;

/** Holders of one live pidfd: pid → its fd numbers. */
type Holders = Map<number, number[]>;

export const pidfd: FileKindOps = {
  name: "pidfd",
  kinds: [FileKind.FILE_PIDFD],

  claims: (fd) => fd.link === "anon_inode:[pidfd]" || fd.link.startsWith("pidfd:"),

  dump(fd, ctx) {
    const flags = fd.flags & PIDFD_FLAGS;
    const pid = Number(fd.info.get("Pid") ?? "0");
    if (pid === -1) {
      return { kind: FileKind.FILE_PIDFD, pidfd: create(PidFdFileSchema, { flags, dead: true }) };
    }
    const what = describe(pid);
    if (pid <= 0 || !inTree(pid, flags, ctx.pids)) {
      throw new DumpError(
        `${fd.where}: a pidfd of pid ${pid}${what}, which is outside the tree; ` +
          `dump a tree that contains it, or have the program close the pidfd first`,
      );
    }
    // The pid as the holder's PID namespace numbers it: fdinfo's NSpid runs
    // from ckpt's namespace inwards, and the holder's own NSpid is as deep
    // as its namespace.
    const chain = (fd.info.get("NSpid") ?? String(pid)).split(/\s+/).filter(Boolean).map(Number);
    const level = statusInts(readStatus(fd.pid), "NSpid").length - 1;
    const seen = chain[Math.max(level, 0)];
    if (!seen) {
      throw new DumpError(
        `${fd.where}: a pidfd of pid ${pid}${what}, which its holder's PID namespace does not see`,
      );
    }
    return { kind: FileKind.FILE_PIDFD, pidfd: create(PidFdFileSchema, { pid: seen, flags }) };
  },

  validate(f, fail) {
    const p = f.pidfd ?? fail("pidfd details missing");
    if (!p.dead && p.pid <= 0) fail(`pidfd of pid ${p.pid}`);
    if (p.flags & ~PIDFD_FLAGS) fail(`pidfd flags 0x${p.flags.toString(16)}`);
  },

  open(f, ctx) {
    const p = f.pidfd!;
    if (p.dead) {
      const n = anonfd.deadPidfd();
      if (p.flags & O.NONBLOCK) fdops.fcntl(n, F_SETFL, O.NONBLOCK);
      return n;
    }
    // A stand-in at the pidfd's numbers until the holder makes the real one.
    holdersOf(ctx, f.id);
    return fdops.eventfd(0, O.CLOEXEC);
  },

  taskOps(f, holding, ctx) {
    if (!f.pidfd!.dead) {
      const holders = holdersOf(ctx.restore, f.id);
      holders.set(holding.task.pid, [...(holders.get(holding.task.pid) ?? []), ...holding.fds]);
    }
    return [];
  },
};

/** The holders of live pidfd `id`; the first call arranges for each holder to
 * make it once every task waits at its last stop. */
function holdersOf(ctx: RestoreContext, id: number): Holders {
  const all = ctx.local(pidfd, () => {
    const m = new Map<number, { f: number; holders: Holders }>();
    ctx.beforeRun(() => {
      for (const { f, holders } of m.values()) {
        const entry = ctx.entries.get(f)!.pidfd!;
        for (const [pid, fds] of holders) remake(pid, fds, entry.pid, entry.flags);
      }
    });
    return m;
  });
  if (!all.has(id)) all.set(id, { f: id, holders: new Map() });
  return all.get(id)!.holders;
}

/** In the stopped task pid: pidfd_open(target) put at each of fds, each
 * keeping the close-on-exec flag its stand-in was given. */
function remake(pid: number, fds: number[], target: number, flags: number): void {
  const call = (nr: number, args: (bigint | number)[], what: string): bigint => {
    const r = ptrace.injectSyscall(pid, nr, args);
    if (r < 0n && r > -4096n) {
      throw new RestoreError(
        `pid ${pid}: ${what} failed: ${errnoText(Number(-r))}; nothing was left running`,
      );
    }
    return r;
  };
  const made = call(
    SYS.pidfd_open,
    [target, flags],
    `opening its pidfd of pid ${target} (fd ${fds.join(", ")})`,
  );
  for (const n of fds) {
    const fdFlags = call(SYS.fcntl, [n, F_GETFD], `reading the flags of fd ${n}`);
    call(
      SYS.dup3,
      [made, n, fdFlags & BigInt(FD_CLOEXEC) ? O.CLOEXEC : 0],
      `putting its pidfd of pid ${target} at fd ${n}`,
    );
  }
  call(SYS.close, [made], "closing a pidfd's spare number");
}

/** Whether the target is a task of the tree, one of its threads (a
 * PIDFD_THREAD pidfd), or a zombie child of one. */
function inTree(pid: number, flags: number, pids: readonly number[]): boolean {
  if (pids.includes(pid)) return true;
  try {
    if (flags & PIDFD_THREAD) {
      const tgid = statusInts(readStatus(pid), "Tgid")[0];
      if (tgid !== undefined && pids.includes(tgid)) return true;
    }
    const st = readStat(pid);
    return st.state === "Z" && pids.includes(Number(st.field(4)));
  } catch {
    return false;
  }
}

function describe(pid: number): string {
  try {
    return ` (${readStat(pid).comm})`;
  } catch {
    return "";
  }
}
