// Controlling terminals and foreground process groups, which belong to
// tasks, not to fds (/proc/PID/stat tty_nr and tpgid, in TaskCore). The
// kernel lets a session leader take a terminal (TIOCSCTTY) and every other
// task only inherit its parent's at fork (or drop it, TIOCNOTTY); the group
// in the foreground is set by a task of the session (TIOCSPGRP). So restore
// has each task do that right after its session and group are made and
// before it forks the children that inherit them (PHASE.AFTER_SESSION, on
// ckpt's fds, which it still holds then); and dump refuses what that cannot
// recreate. A --shell-job's terminal, outside the tree, is the restoring
// terminal: the job's root inherits it from ckpt, and is put in the
// foreground if it was.
import type { FileEntry, TaskCore } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { kill, O } from "../native/mod.ts";
import { TIOC, tty } from "../native/tty.ts";
import { readStat } from "../proc/status.ts";
import { OP, PHASE, type PlanOp } from "../restore/plan_buffer.ts";
import type { Blocker } from "./collect.ts";
import type { RestoreContext } from "./kind.ts";
import type { OpenedFiles } from "./open.ts";
import { pairEntry } from "./tty.ts";
import { ownTerminal, ttyName } from "./tty_dev.ts";
import { writeTermios } from "./tty_queue.ts";

const SYS_ioctl = 16;
const SIGWINCH = 28;
/** The --shell-job terminal, whatever its number at dump and at restore. */
const JOB = -1;

/** Dump: what the tree's controlling terminals cannot be restored as (the
 * pairs' own checks, foreground group and session leader, are tty.ts's). */
export function cttyBlockers(cores: TaskCore[], files: FileEntry[], shellJob: boolean): Blocker[] {
  const entries = new Map(files.map((f) => [f.id, f]));
  const root = cores[0];
  const job = shellJob && root.ttyNr && !pairEntry(entries, root.ttyNr) ? root.ttyNr : 0;
  const byPid = new Map(cores.map((c) => [c.pid, c]));
  const out: Blocker[] = [];
  for (const c of cores) {
    if (!c.ttyNr) continue;
    const name = ttyName(c.ttyNr);
    if (!pairEntry(entries, c.ttyNr)) {
      if (c.ttyNr === job && c.sid === root.sid && c.sid !== c.pid) continue;
      out.push({
        pid: c.pid,
        message: `pid ${c.pid}: its controlling terminal ${name} is outside the tree` +
          (c.sid === c.pid
            ? `, and it leads its session (only the session of the restoring shell has that terminal)`
            : shellJob
            ? ` and not the job's`
            : `; a job of a shell can be dumped with --shell-job`),
      });
      continue;
    }
    const parent = byPid.get(c.ppid);
    if (c.sharesFiles && (c.sid === c.pid || (c.pgid === c.ttyPgrp && c.pgid !== c.sid))) {
      out.push({
        pid: c.pid,
        message: `pid ${c.pid} shares its parent's fd table and takes ${name} or its foreground; ` +
          `this cannot be restored yet`,
      });
    } else if (c.sid !== c.pid && parent && parent.sid === c.sid && parent.ttyNr !== c.ttyNr) {
      out.push({
        pid: c.pid,
        message: `pid ${c.pid} has the controlling terminal ${name} but its parent ${c.ppid} ` +
          `does not; only a session leader can take a terminal, so this cannot be recreated`,
      });
    }
  }
  return out;
}

/** A --shell-job coming back in the foreground finds its terminal as it
 * left it, as after a shell's `fg`: its settings (when ckpt is in the
 * foreground of that terminal, i.e. run from the shell), and a SIGWINCH once
 * it runs if the window size is not the one it knew. */
function backInForeground(ctx: RestoreContext, pgid: number, fd: number): void {
  const t = [...ctx.entries.values()].find((e) => e.tty?.jobTermios)?.tty;
  if (!t) return;
  const ownGroup = Number(readStat(Deno.pid).field(5));
  if (tty.getInt(fd, TIOC.TIOCGPGRP) === ownGroup) {
    writeTermios(fd, t.jobTermios!, "the restoring terminal");
  }
  const ws = new Uint8Array(8);
  tty.ioctlBuf(fd, TIOC.TIOCGWINSZ, ws, "the restoring terminal");
  const w = new DataView(ws.buffer);
  if (w.getUint16(0, true) !== t.jobRows || w.getUint16(2, true) !== t.jobCols) {
    ctx.atClose(() => kill(-pgid, SIGWINCH));
  }
}

/** Who forks a task and at which moment of the forker's own setup
 * (src/restore/sessions.ts): what its controlling terminal is at birth.
 * "fresh": a helper that made a new session forks it, so it has none. */
export interface Born {
  from: number;
  stage: "early" | "prejoin" | "normal" | "fresh";
  /** The forker's dumped tty_nr: what it holds once its own ops ran. */
  fromTtyNr: number;
}

interface State {
  /** The terminal children forked at each moment inherit from a task
   * (tty_nr, JOB or 0; JOB is also ckpt's terminal when the job had none):
   * early, before its setsid; prejoin, after its setsid, before its own ops. */
  inherit: Map<number, { early: number; prejoin: number; normal: number }>;
  /** Terminals whose foreground group is set. */
  fg: Set<number>;
  /** The dumped tty_nr of the --shell-job terminal (0: none). */
  job: number;
  /** ckpt's own terminal, opened when an op needs it. */
  ownFd?: number;
}

/** Restore: the ops task `core` runs at PHASE.AFTER_SESSION for its
 * controlling terminal and its terminal's foreground group. */
export function cttyOps(
  core: TaskCore,
  place: { root: boolean; shellJob: boolean; born?: Born },
  opened: OpenedFiles,
): PlanOp[] {
  const ctx = opened.context;
  const st = ctx.local<State>(cttyOps, () => ({ inherit: new Map(), fg: new Set(), job: 0 }));
  const pid = core.pid;
  if (place.root) {
    st.job = place.shellJob && core.ttyNr && !pairEntry(ctx.entries, core.ttyNr) ? core.ttyNr : 0;
  }
  const ownFd = () =>
    st.ownFd ??= ctx.keep(
      ctx.openOperators(ownTerminal()!.path, O.RDWR | O.NOCTTY, "the restoring terminal"),
    );
  const key = (ttyNr: number) => (ttyNr && ttyNr === st.job ? JOB : ttyNr);
  const fdFor = (k: number): number => {
    if (k === JOB) return ownFd();
    const e = pairEntry(ctx.entries, k);
    if (!e) {
      throw new RestoreError(
        `pid ${pid}: its controlling terminal ${ttyName(k)} is not in the images`,
      );
    }
    return opened.get(e.id, `the terminal ${ttyName(k)} of pid ${pid}`, core);
  };
  const name = (k: number) => (k === JOB ? "the restoring terminal" : ttyName(k));
  const ioctl = (k: number, req: number, arg: number | { bytes: Uint8Array }, what: string) => ({
    op: OP.SYSCALL,
    phase: PHASE.AFTER_SESSION,
    a: [SYS_ioctl, fdFor(k), req, arg],
    what,
  });

  // What it has once forked: ckpt's terminal for the root (standing for the
  // job's; a session leader drops it with setsid), for the others what its
  // forker held at that moment.
  const born = place.born ?? { from: core.ppid, stage: "normal", fromTtyNr: -1 };
  const stages = st.inherit.get(born.from);
  const inherited = place.root ? (ownTerminal() ? JOB : 0) : born.stage === "fresh"
    ? 0
    // After its own ops the forker holds its dumped terminal, whether or not
    // it came before this task.
    : born.stage === "normal" && born.fromTtyNr >= 0
    ? key(born.fromTtyNr)
    : stages?.[born.stage] ?? 0;
  const want = key(core.ttyNr);
  const leader = core.sid === pid;
  const ops: PlanOp[] = [];
  if (leader) {
    if (want === JOB) {
      throw new RestoreError(`pid ${pid} leads its session, whose terminal was outside the tree`);
    }
    if (want) {
      ops.push(ioctl(want, TIOC.TIOCSCTTY, 0, `taking ${name(want)} as controlling terminal`));
    }
  } else if (inherited !== want) {
    if (want !== 0) {
      throw new RestoreError(
        want === JOB && inherited === 0
          ? `pid ${pid} had the job's terminal as its controlling terminal: restore --shell-job from a terminal (ckpt has none)`
          : `pid ${pid} had ${
            name(want)
          } as controlling terminal, which it cannot get back (it does not lead its session)`,
      );
    }
    ops.push(
      ioctl(inherited, TIOC.TIOCNOTTY, 0, `giving up ${name(inherited)} as controlling terminal`),
    );
  }
  // The group in the foreground, set by its first task (its group exists
  // then); a session leader's own group is there already after TIOCSCTTY.
  if (want && core.ttyPgrp > 0 && core.pgid === core.ttyPgrp && !st.fg.has(want)) {
    st.fg.add(want);
    if (want === JOB) backInForeground(ctx, core.pgid, ownFd());
    if (!leader) {
      const pg = new Uint8Array(4);
      new DataView(pg.buffer).setInt32(0, core.pgid, true);
      ops.push(
        ioctl(
          want,
          TIOC.TIOCSPGRP,
          { bytes: pg },
          `putting group ${core.pgid} in the foreground of ${name(want)}`,
        ),
      );
    }
  }
  // Its own ops run once its session and group are made, before the
  // children that inherit them are forked.
  st.inherit.set(pid, { early: inherited, prejoin: leader ? 0 : inherited, normal: want });
  if (ops.length && core.sharesFiles) {
    throw new RestoreError(
      `pid ${pid} shares its parent's fd table and must change its controlling terminal; this cannot be restored yet`,
    );
  }
  return ops;
}
