// Terminals. A pseudo-terminal pair the tree holds (tmux, screen, script,
// expect, an sshd's session) is recreated: master and slave with the same
// index (the program sees /dev/pts/N as its terminal's name), the slave's
// settings, window size, lock, packet and exclusive modes, the owner and mode
// of /dev/pts/N, and the bytes queued each way (tty_queue.ts). /dev/tty is
// opened again on the terminal it referred to. A terminal the tree holds only
// one side of (a pty whose master is outside, a console, a serial line) is
// refused, except the one terminal of a --shell-job, which restores as the
// restoring terminal. Controlling terminals and foreground groups are the
// tasks' part (ctty.ts).
import { create } from "@bufbuild/protobuf";
import {
  type FileEntry,
  FileKind,
  PtyStateSchema,
  type TtyChunk,
  type TtyFile,
  TtyFileSchema,
  TtyRole,
} from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops, O, sameFile } from "../native/mod.ts";
import { POLL, TIOC, tty as ttyio } from "../native/tty.ts";
import { readStat } from "../proc/status.ts";
import { log } from "../util/log.ts";
import { formatMs } from "../util/units.ts";
import { BlockedDump, type Blocker } from "./collect.ts";
import type { DumpContext, FileKindOps, RestoreContext } from "./kind.ts";
import { F_SETFL, OPEN_MASK, STATUS_FLAGS } from "./open_flags.ts";
import { validPath } from "./regular.ts";
import {
  isCurrentTty,
  isPtmx,
  isPtsSlave,
  isTerminal,
  minor,
  ownTerminal,
  ttyName,
} from "./tty_dev.ts";
import { drainInput, drainOutput, readTermios, refill, stopped } from "./tty_queue.ts";

const MAX_INPUT = 1 << 16;
const MAX_OUTPUT = 1 << 20;
const LOCKED_TERMIOS = 36; // struct termios, as TIOCGLCKTRMIOS gives it
const N_TTY = 0;

interface Held {
  pid: number;
  fd: number;
  where: string;
  rec: TtyFile;
}
interface Master extends Held {
  copy: number;
}

/** What one dump saw of terminals, sorted out once every fd is known. */
class Seen {
  readonly masters = new Map<number, Master>();
  readonly slaves: Held[] = [];
  readonly currents: Held[] = [];
  readonly others: Held[] = [];
  /** What puts the pairs back as they were, run when the dump ends. */
  readonly undo: (() => void)[] = [];
}

function seen(ctx: DumpContext): Seen {
  return ctx.local(tty, () => {
    const s = new Seen();
    ctx.atFinish((pids) => finish(s, pids, ctx));
    ctx.atRelease(() => {
      try {
        for (const fn of s.undo) fn();
      } finally {
        for (const m of s.masters.values()) fdops.close(m.copy);
      }
    });
    return s;
  });
}

export const tty: FileKindOps = {
  name: "terminal",
  kinds: [FileKind.FILE_TTY],

  claims: (fd) =>
    fd.link.startsWith("/") && fd.st.isCharDevice === true && isTerminal(fd.st.rdev ?? 0, fd.link),

  dump(fd, ctx) {
    const rdev = fd.st.rdev ?? 0;
    const s = seen(ctx);
    const rec = create(TtyFileSchema, { path: fd.link, flags: fd.flags, rdev: BigInt(rdev) });
    const held = { pid: fd.pid, fd: fd.fd, where: fd.where, rec };
    if (isPtmx(rdev) && fd.info.has("tty-index")) {
      const copy = ctx.copyFd(fd.pid, fd.fd, fd.where);
      try {
        rec.role = TtyRole.TTY_PTY_MASTER;
        rec.index = ttyio.getInt(copy, TIOC.TIOCGPTN, fd.where);
        // The slave's device (what tty_nr of a task it controls says).
        rec.rdev = BigInt(ttyio.getInt(copy, TIOC.TIOCGDEV, fd.where));
      } catch (err) {
        fdops.close(copy);
        throw err;
      }
      s.masters.set(rec.index, { ...held, copy });
    } else if (isPtmx(rdev)) {
      throw new DumpError(`${fd.where}: a pseudo-terminal master whose fdinfo has no tty-index`);
    } else if (isPtsSlave(rdev)) {
      rec.role = TtyRole.TTY_PTY_SLAVE;
      rec.index = Number(/\/pts\/(\d+)$/.exec(fd.link)?.[1] ?? minor(rdev));
      s.slaves.push(held);
    } else if (isCurrentTty(rdev)) {
      rec.role = TtyRole.TTY_CURRENT;
      const copy = ctx.copyFd(fd.pid, fd.fd, fd.where);
      try {
        rec.rdev = BigInt(ttyio.getInt(copy, TIOC.TIOCGDEV, fd.where));
      } finally {
        fdops.close(copy);
      }
      s.currents.push(held);
    } else {
      rec.role = TtyRole.TTY_OUTSIDE;
      s.others.push(held);
    }
    return { kind: FileKind.FILE_TTY, tty: rec };
  },

  validate(f, fail) {
    const t = f.tty ?? fail("terminal details missing");
    if (!validPath(t.path)) {
      fail(`terminal path ${JSON.stringify(t.path.slice(0, 80))} is not absolute`);
    }
    if (!(t.role in TtyRole)) fail(`terminal role ${t.role} is unknown`);
    if (t.index >= 1 << 20) fail(`pseudo-terminal index ${t.index} is out of range`);
    if (t.jobTermios && t.jobTermios.cc.length !== 19) fail("job terminal settings are damaged");
    if (t.role !== TtyRole.TTY_PTY_MASTER) return;
    // Restore opens this path to make the pair: nothing else.
    if (!/^\/dev\/(pts\/)?ptmx$/.test(t.path)) {
      fail(`${t.path} is not a pseudo-terminal multiplexer`);
    }
    const p = t.pty ?? fail("pseudo-terminal state missing");
    if (!p.termios || p.termios.cc.length !== 19) fail("pseudo-terminal settings missing");
    if (p.lockedTermios.length && p.lockedTermios.length !== LOCKED_TERMIOS) {
      fail("locked terminal settings have the wrong size");
    }
    if (p.input.reduce((a, c) => a + c.data.length, 0) > MAX_INPUT) fail("input queue too large");
    if (p.output.length > MAX_OUTPUT) fail("output queue too large");
    if (p.rows > 0xffff || p.cols > 0xffff || p.xpixel > 0xffff || p.ypixel > 0xffff) {
      fail("window size out of range");
    }
  },

  open(f, ctx, where) {
    const t = f.tty!;
    switch (t.role) {
      case TtyRole.TTY_PTY_MASTER:
      case TtyRole.TTY_PTY_SLAVE:
        return pairs(ctx, where).take(f.id, where);
      case TtyRole.TTY_CURRENT:
        if (pairs(ctx, where).has(f.id)) return pairs(ctx, where).take(f.id, where);
        jobTerminal(ctx, where);
        return ctx.openPath("/dev/tty", (t.flags & OPEN_MASK) | O.NOCTTY, where);
      default:
        // The restoring terminal: the operator's to hand over (-j).
        return ctx.openOperators(
          jobTerminal(ctx, where),
          (t.flags & OPEN_MASK) | O.NOCTTY,
          where,
        );
    }
  },

  inheritKey: (f) => f.tty?.role === TtyRole.TTY_OUTSIDE ? f.tty.path : undefined,
};

// ---- dump -------------------------------------------------------------------

/** With every fd known: which terminals are the tree's own, whether the
 * others may go (--shell-job), and each pair's state. */
function finish(s: Seen, pids: number[], ctx: DumpContext): void {
  const t0 = performance.now();
  const blockers: Blocker[] = [];
  const block = (h: Held, message: string) => blockers.push({ pid: h.pid, fd: h.fd, message });
  const tree = new Set(pids);
  const slaveRdev = new Map([...s.masters.values()].map((m) => [Number(m.rec.rdev), m.rec.index]));
  const outside: Held[] = [...s.others];
  for (const h of s.slaves) {
    if (!s.masters.has(h.rec.index) || !slaveRdev.has(Number(h.rec.rdev))) {
      h.rec.role = TtyRole.TTY_OUTSIDE;
      outside.push(h);
    }
  }
  for (const h of s.currents) if (!slaveRdev.has(Number(h.rec.rdev))) outside.push(h);

  const rootTty = Number(readStat(pids[0]).field(7));
  const job = ctx.shellJob
    ? (rootTty && !slaveRdev.has(rootTty) ? rootTty : Number(outside[0]?.rec.rdev ?? 0))
    : 0;
  for (const h of outside) {
    const rdev = Number(h.rec.rdev);
    if (!ctx.shellJob) {
      block(
        h,
        `${h.where} is ${ttyName(rdev)}, a terminal whose other side is outside the tree; ` +
          `a job of a shell can be dumped with --shell-job (restored onto the restoring terminal)`,
      );
    } else if (rdev !== job) {
      block(
        h,
        `${h.where} is ${ttyName(rdev)}, a terminal outside the tree other than the job's ` +
          `(${ttyName(job)}); --shell-job restores only the job's terminal`,
      );
    }
  }

  const mine = outside.find((h) => Number(h.rec.rdev) === job);
  if (ctx.shellJob && mine) jobSettings(mine, ctx);

  const holders = outsideHolders(s, tree);
  for (const m of s.masters.values()) {
    const n = m.rec.index;
    const slaveHeld = s.slaves.some((h) =>
      h.rec.index === n && h.rec.role === TtyRole.TTY_PTY_SLAVE
    );
    const closed = (fdops.poll(m.copy, POLL.HUP) & POLL.HUP) !== 0;
    const outsider = holders.get(n);
    if (outsider) {
      block(
        m,
        `/dev/pts/${n} of this pseudo-terminal is also held outside the tree, by ${outsider}`,
      );
      continue;
    }
    if (!closed && !slaveHeld) {
      block(
        m,
        `/dev/pts/${n} of this pseudo-terminal was never opened, or only outside the tree; ` +
          `dump the processes that use it along with it`,
      );
      continue;
    }
    const sid = sessionOf(m.copy);
    if (sid && !tree.has(sid)) {
      block(m, `/dev/pts/${n} controls session ${sid}, whose leader is not in the tree`);
      continue;
    }
    const fg = sid ? ttyio.getInt(m.copy, TIOC.TIOCGPGRP, m.where) : 0;
    if (fg > 0 && !pids.some((p) => Number(readStat(p).field(5)) === fg)) {
      block(
        m,
        `the foreground process group ${fg} of /dev/pts/${n} has no process in the tree ` +
          `(it just exited?); dump again`,
      );
      continue;
    }
    try {
      capture(m, closed, s.undo);
    } catch (err) {
      if (!(err instanceof DumpError)) throw err;
      block(m, err.message);
    }
  }
  log.debug(
    `terminals: ${s.masters.size} pseudo-terminal pair(s) read in ${
      formatMs(performance.now() - t0)
    }`,
  );
  if (blockers.length) throw new BlockedDump(blockers);
}

/** The job's terminal as the job left it, for the restoring terminal. */
function jobSettings(h: Held, ctx: DumpContext): void {
  const copy = ctx.copyFd(h.pid, h.fd, h.where);
  try {
    h.rec.jobTermios = readTermios(copy, h.where);
    const ws = new Uint8Array(8);
    ttyio.ioctlBuf(copy, TIOC.TIOCGWINSZ, ws, h.where);
    const w = new DataView(ws.buffer);
    h.rec.jobRows = w.getUint16(0, true);
    h.rec.jobCols = w.getUint16(2, true);
  } finally {
    fdops.close(copy);
  }
}

function sessionOf(master: number): number {
  try {
    return ttyio.getInt(master, TIOC.TIOCGSID);
  } catch {
    return 0; // ENOTTY: no session has it
  }
}

/** Outside the tree, who else holds a pair's slave or its master: "pid P
 * (comm) fd N". Such holders would be left with a dead terminal. */
function outsideHolders(s: Seen, tree: Set<number>): Map<number, string> {
  const out = new Map<number, string>();
  if (!s.masters.size) return out;
  for (const e of Deno.readDirSync("/proc")) {
    const pid = Number(e.name);
    if (!Number.isInteger(pid) || tree.has(pid) || pid === Deno.pid) continue;
    try {
      for (const f of Deno.readDirSync(`/proc/${pid}/fd`)) {
        const path = `/proc/${pid}/fd/${f.name}`;
        const link = Deno.readLinkSync(path);
        let m: Master | undefined;
        if (link.startsWith("/dev/pts/") && link !== "/dev/pts/ptmx") {
          const st = Deno.statSync(path);
          m = [...s.masters.values()].find((m) => Number(m.rec.rdev) === st.rdev);
        } else if (link === "/dev/ptmx" || link === "/dev/pts/ptmx") {
          m = [...s.masters.values()].find((m) => sameFile(pid, Number(f.name), m.pid, m.fd));
        }
        if (m && !out.has(m.rec.index)) {
          out.set(m.rec.index, `pid ${pid} (${readStat(pid).comm}) fd ${f.name}`);
        }
      }
    } catch { /* gone meanwhile, or closed */ }
  }
  return out;
}

/** Reads a pair's state through the master copy and a slave description of
 * ckpt's own, and puts back what reading took when the dump ends (the tree
 * is still frozen then; if the dump succeeds it is killed anyway). */
function capture(m: Master, closed: boolean, undo: (() => void)[]): void {
  const c = m.copy, what = m.where, n = m.rec.index;
  const p = create(PtyStateSchema, { slaveClosed: closed });
  if (ttyio.getInt(c, TIOC.TIOCGETD, what) !== N_TTY) {
    throw new DumpError(`${what}: the master has a line discipline other than N_TTY`);
  }
  if (fdops.poll(c, POLL.PRI) & POLL.PRI) {
    throw new DumpError(
      `${what}: a packet-mode status (TIOCPKT) is waiting to be read on the master; dump again`,
    );
  }
  p.locked = ttyio.getInt(c, TIOC.TIOCGPTLCK, what) !== 0;
  p.packet = ttyio.getInt(c, TIOC.TIOCGPKT, what) !== 0;
  p.masterExcl = ttyio.getInt(c, TIOC.TIOCGEXCL, what) !== 0;
  p.termios = readTermios(c, what);
  const locked = new Uint8Array(LOCKED_TERMIOS);
  ttyio.ioctlBuf(c, TIOC.TIOCGLCKTRMIOS, locked, what);
  if (locked.some((b) => b !== 0)) p.lockedTermios = locked;
  const ws = new Uint8Array(8);
  ttyio.ioctlBuf(c, TIOC.TIOCGWINSZ, ws, what);
  const w = new DataView(ws.buffer);
  [p.rows, p.cols, p.xpixel, p.ypixel] = [0, 2, 4, 6].map((o) => w.getUint16(o, true));

  // From here on the pair is changed, and put back at release.
  const output: Uint8Array[] = [];
  const input: TtyChunk[] = [];
  let peer = -1, unlocked = false, unlockedTermios = false;
  undo.push(() => {
    try {
      if (peer >= 0) {
        const bytes = new Uint8Array(output.reduce((a, b) => a + b.length, 0));
        let o = 0;
        for (const b of output) bytes.set(b, (o += b.length) - b.length);
        if (refill(peer, p.termios!, input, bytes, what) && p.packet) {
          // The settings changed on the way: clear any status that made.
          ttyio.setInt(c, TIOC.TIOCPKT, 0, what);
          ttyio.setInt(c, TIOC.TIOCPKT, 1, what);
        }
      }
      if (unlockedTermios) ttyio.ioctlBuf(c, TIOC.TIOCSLCKTRMIOS, locked, what);
      if (unlocked) ttyio.setInt(c, TIOC.TIOCSPTLCK, 1, what);
    } finally {
      if (peer >= 0) fdops.close(peer);
    }
  });
  if (p.locked) {
    ttyio.setInt(c, TIOC.TIOCSPTLCK, 0, what);
    unlocked = true;
  }
  peer = fdops.ioctl(c, TIOC.TIOCGPTPEER, BigInt(O.RDWR | O.NOCTTY | O.NONBLOCK | O.CLOEXEC));
  if (ttyio.getInt(peer, TIOC.TIOCGETD, what) !== N_TTY) {
    throw new DumpError(`${what}: /dev/pts/${n} has a line discipline other than N_TTY`);
  }
  p.slaveExcl = ttyio.getInt(peer, TIOC.TIOCGEXCL, what) !== 0;
  const st = Deno.statSync(`/proc/self/fd/${peer}`);
  p.slaveMode = (st.mode ?? 0o620) & 0o7777;
  p.slaveUid = st.uid ?? 0;
  p.slaveGid = st.gid ?? 0;
  if (p.lockedTermios.length) {
    // Locked bits would keep the settings reading and putting back need.
    ttyio.ioctlBuf(c, TIOC.TIOCSLCKTRMIOS, new Uint8Array(LOCKED_TERMIOS), what);
    unlockedTermios = true;
  }
  drainOutput(c, p.packet, what, output);
  if (stopped(peer)) {
    throw new DumpError(
      `${what}: output to /dev/pts/${n} is stopped (^S, or tcflow); resume it (^Q) and dump again`,
    );
  }
  drainInput(peer, p.termios, what, input);
  p.input = input;
  p.output = new Uint8Array(output.reduce((a, b) => a + b.length, 0));
  let o = 0;
  for (const b of output) p.output.set(b, (o += b.length) - b.length);
  if (p.output.length > MAX_OUTPUT) {
    throw new DumpError(`${what}: ${p.output.length} bytes of output are waiting to be read`);
  }
  m.rec.pty = p;
}

// ---- restore ----------------------------------------------------------------

/** The tree's pairs, made all at once on first use (each index must come out
 * of the kernel's allocator, which gives the lowest free one). */
class Pairs {
  private readonly fds = new Map<number, number>(); // entry id -> ckpt's fd
  private readonly taken = new Set<number>();

  constructor(ctx: RestoreContext, where: string) {
    const all = [...ctx.entries.values()].filter((e) => e.kind === FileKind.FILE_TTY && e.tty);
    const masters = all.filter((e) => e.tty!.role === TtyRole.TTY_PTY_MASTER)
      .sort((a, b) => a.tty!.index - b.tty!.index);
    ctx.atClose(() => {
      for (const [id, n] of this.fds) if (!this.taken.has(id)) fdops.close(n);
    });
    const got = allocate(masters, ctx, where);
    for (const [id, n] of got) this.fds.set(id, n);
    for (const e of masters) this.setUp(e, all);
  }

  has(id: number): boolean {
    return this.fds.has(id);
  }

  take(id: number, where: string): number {
    const n = this.fds.get(id);
    if (n === undefined) {
      throw new RestoreError(`${where}: its pseudo-terminal's master is not in the images`);
    }
    this.taken.add(id);
    return n;
  }

  private setUp(e: FileEntry, all: FileEntry[]): void {
    const t = e.tty!, p = t.pty!, m = this.fds.get(e.id)!;
    const what = `/dev/pts/${t.index}`;
    ttyio.setInt(m, TIOC.TIOCSPTLCK, 0, what);
    const peer = fdops.ioctl(
      m,
      TIOC.TIOCGPTPEER,
      BigInt(O.RDWR | O.NOCTTY | O.NONBLOCK | O.CLOEXEC),
    );
    try {
      const st = Deno.statSync(`/proc/self/fd/${peer}`);
      if (st.rdev !== Number(t.rdev)) {
        throw new RestoreError(
          `${what}: the new pseudo-terminal has device ${st.rdev}, not ${t.rdev}`,
        );
      }
      Deno.chownSync(`/proc/self/fd/${peer}`, p.slaveUid, p.slaveGid);
      Deno.chmodSync(`/proc/self/fd/${peer}`, p.slaveMode);
      for (const s of all) {
        const st = s.tty!;
        if (st.role === TtyRole.TTY_PTY_SLAVE && st.index === t.index) {
          const flags = (st.flags & (O.ACCMODE | O.NONBLOCK)) | O.NOCTTY | O.CLOEXEC;
          const n = fdops.ioctl(m, TIOC.TIOCGPTPEER, BigInt(flags));
          this.fds.set(s.id, n);
          if (st.flags & STATUS_FLAGS & ~O.NONBLOCK) {
            fdops.fcntl(n, F_SETFL, st.flags & STATUS_FLAGS);
          }
        } else if (st.role === TtyRole.TTY_CURRENT && st.rdev === t.rdev) {
          this.fds.set(s.id, ttyio.openAsCtty(m, (st.flags & OPEN_MASK) | O.NOCTTY, what));
        }
      }
      refill(peer, p.termios!, p.input, p.output, what);
      const ws = new Uint8Array(8);
      const w = new DataView(ws.buffer);
      [p.rows, p.cols, p.xpixel, p.ypixel].forEach((v, i) => w.setUint16(i * 2, v, true));
      ttyio.ioctlBuf(m, TIOC.TIOCSWINSZ, ws, what);
      if (p.lockedTermios.length) {
        ttyio.ioctlBuf(m, TIOC.TIOCSLCKTRMIOS, p.lockedTermios.slice(), what);
      }
      if (p.packet) ttyio.setInt(m, TIOC.TIOCPKT, 1, what);
      if (p.masterExcl) fdops.ioctl(m, TIOC.TIOCEXCL);
      if (p.slaveExcl) fdops.ioctl(peer, TIOC.TIOCEXCL);
      if (p.locked) ttyio.setInt(m, TIOC.TIOCSPTLCK, 1, what);
    } catch (err) {
      if (err instanceof RestoreError) throw err;
      throw new RestoreError(
        `${what}: cannot set the pseudo-terminal up: ${(err as Error).message}`,
      );
    } finally {
      // Its last close, when the tree holds no slave, hangs the slave up
      // for the master as it was at dump.
      fdops.close(peer);
    }
  }
}

function pairs(ctx: RestoreContext, where: string): Pairs {
  return ctx.local(tty, () => new Pairs(ctx, where));
}

/** Opens masters until each entry has its index: the kernel gives the
 * lowest free one, so lower free indexes are held meanwhile, then freed. */
function allocate(masters: FileEntry[], ctx: RestoreContext, where: string): Map<number, number> {
  const got = new Map<number, number>();
  const fillers: number[] = [];
  try {
    for (const e of masters) {
      const t = e.tty!;
      const flags = (t.flags & OPEN_MASK) | O.NOCTTY;
      for (;;) {
        const n = ctx.openPath(t.path, flags, where);
        const index = ttyio.getInt(n, TIOC.TIOCGPTN, t.path);
        if (index === t.index) {
          got.set(e.id, n);
          break;
        }
        if (index < t.index) {
          fillers.push(n);
          continue;
        }
        fdops.close(n);
        throw new RestoreError(
          `/dev/pts/${t.index} is taken by another terminal${holderOf(t.index)}; ` +
            `the program knows its terminal by that name: close it and restore again`,
        );
      }
    }
  } catch (err) {
    for (const n of got.values()) fdops.close(n);
    throw err;
  } finally {
    for (const n of fillers) fdops.close(n);
  }
  return got;
}

function holderOf(index: number): string {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      for (const f of Deno.readDirSync(`/proc/${e.name}/fd`)) {
        const link = Deno.readLinkSync(`/proc/${e.name}/fd/${f.name}`);
        const master = (link === "/dev/ptmx" || link === "/dev/pts/ptmx") &&
          Deno.readTextFileSync(`/proc/${e.name}/fdinfo/${f.name}`).includes(
            `tty-index:\t${index}\n`,
          );
        if (master || link === `/dev/pts/${index}`) {
          return ` (pid ${e.name}, ${readStat(Number(e.name)).comm})`;
        }
      }
    } catch { /* gone */ }
  }
  return "";
}

/** The restoring terminal, for a --shell-job's: its path. */
function jobTerminal(ctx: RestoreContext, where: string): string {
  if (!ctx.shellJob) {
    throw new RestoreError(`${where} is a terminal outside the tree; restore with --shell-job`);
  }
  const own = ownTerminal();
  if (!own) {
    throw new RestoreError(
      `${where} was the job's terminal: restore --shell-job from a terminal (ckpt has no controlling terminal)`,
    );
  }
  return own.path;
}

/** The entry of the tree's pair whose slave has device rdev. */
export function pairEntry(entries: Map<number, FileEntry>, rdev: number): FileEntry | undefined {
  for (const e of entries.values()) {
    if (e.tty?.role === TtyRole.TTY_PTY_MASTER && Number(e.tty.rdev) === rdev) return e;
  }
  return undefined;
}
