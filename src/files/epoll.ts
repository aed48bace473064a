// epoll: every registration (target file, the fd number it was added
// under, event mask, 64-bit data). The kernel keys a registration on (file,
// fd number), so the registrations cannot be made in ckpt, whose numbers
// differ: restore makes an empty epoll in ckpt and its first holder adds
// each target itself, under the number it had, once its fds are in place
// (a target whose number now holds another file, or nothing, is put there
// just for the epoll_ctl). Registering from the task also ties a signalfd
// target's wake-ups to the task's own signal handlers, as in the program.
import { create } from "@bufbuild/protobuf";
import { newMessage } from "../images/codec.ts";
import {
  type EpollFile,
  EpollFileSchema,
  type EpollTarget as EpollTargetEntry,
  EpollTargetSchema,
  type FileEntry,
  FileKind,
} from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import { fd as fdops, O } from "../native/mod.ts";
import {
  anonfd,
  type EpollTarget,
  type EpollTargets,
  epollTargets,
  fdStats,
  isEpollTarget,
  readFdStats,
} from "../native/anonfd.ts";
import { listFds } from "../native/fdtable.ts";
import { log } from "../util/log.ts";
import { OP, PHASE, type PlanOp } from "../restore/plan_buffer.ts";
import { F_SETFL } from "./open_flags.ts";
import { BlockedDump, type Blocker } from "./collect.ts";
import type { DumpContext, DumpedFd, FileKindOps, TaskOpsContext } from "./kind.ts";

const NR_EPOLL_CTL = 233, NR_EPOLL_WAIT = 232;
const EPOLL_CTL_ADD = 1;
const EPOLL_CLOEXEC = O.CLOEXEC;
export const EPOLL = {
  IN: 0x1,
  PRI: 0x2,
  OUT: 0x4,
  ERR: 0x8,
  HUP: 0x10,
  RDNORM: 0x40,
  RDBAND: 0x80,
  WRNORM: 0x100,
  WRBAND: 0x200,
  MSG: 0x400,
  RDHUP: 0x2000,
  EXCLUSIVE: 1 << 28,
  WAKEUP: 1 << 29,
  ONESHOT: 1 << 30,
  ET: 1 << 31,
} as const;
/** What a fired EPOLLONESHOT registration keeps (the kernel's EP_PRIVATE_BITS). */
const PRIVATE = EPOLL.EXCLUSIVE | EPOLL.WAKEUP | EPOLL.ONESHOT | (EPOLL.ET >>> 0);
/** Readiness bits a registration can ask for. */
const READY = EPOLL.IN | EPOLL.PRI | EPOLL.OUT | EPOLL.RDNORM | EPOLL.RDBAND | EPOLL.WRNORM |
  EPOLL.WRBAND | EPOLL.MSG | EPOLL.RDHUP;
/** A fired EPOLLONESHOT registration: only its private bits are left. */
function disarmedOneShot(events: number): boolean {
  return (events & EPOLL.ONESHOT) !== 0 && (events & ~PRIVATE & 0xffffffff) === 0;
}

/** Files whose readiness is already as it was when the task adds targets
 * (pipes, sockets, eventfds, timerfds); a signalfd's depends on signals
 * queued later, an epoll's on targets perhaps not added yet. */
function readyAtOnce(link: string, st: Deno.FileInfo): boolean {
  return /^(pipe|socket):|^anon_inode:\[(eventfd|timerfd)\]$/.test(link) || !!st.isFifo;
}

interface Pending {
  fd: DumpedFd;
  body: EpollFile;
  targets: EpollTargets;
}

/** Epolls of one dump whose targets are resolved once every fd is known. */
class EpollDump {
  readonly pending: Pending[] = [];
  /** Each task's fd table as the dump read it (prefetch), as fdStats. */
  readonly tables = new Map<number, Uint8Array>();
  /** dev:ino → [pid, fd] over the whole tree, made only when a target is
   * not at its own number. */
  private index: Map<string, [number, number][]> | undefined;

  constructor(private readonly ctx: DumpContext) {
    ctx.atFinish((pids) => this.finish(pids));
  }

  private finish(pids: number[]): void {
    const blockers: Blocker[] = [];
    for (const p of this.pending) {
      const all = p.targets;
      for (let i = 0; i < all.length; i++) {
        // Most targets are at their own number in the epoll's task.
        const events = all.events(i);
        if (all.same(i) && !disarmedOneShot(events)) {
          let fileId;
          try {
            fileId = this.ctx.fileOf(p.fd.pid, all.tfd(i));
          } catch (err) {
            // The target itself cannot be dumped: its own fd names it already.
            if (!(err instanceof DumpError)) throw err;
            continue;
          }
          p.body.targets.push(
            newMessage(EpollTargetSchema, {
              tfd: all.tfd(i),
              events: events >>> 0,
              data: all.data(i),
              fileId,
            }),
          );
          continue;
        }
        const t = all.at(i);
        try {
          const holder = this.holderOf(p, t, pids);
          if (holder === undefined) {
            blockers.push({
              pid: p.fd.pid,
              fd: p.fd.fd,
              kind: "epoll",
              message: `${p.fd.where}: target fd ${t.tfd} (inode ${t.ino}) is still registered ` +
                `but that fd was closed, and no fd in the tree holds its file (it lives on outside ` +
                `the tree, in a socket queue or in a mapping); remove it with EPOLL_CTL_DEL before ` +
                `closing the fd, or dump the process that holds it too`,
            });
            continue;
          }
          p.body.targets.push(this.entry(p, t, holder));
        } catch (err) {
          // The target itself cannot be dumped: its own fd names it already.
          if (!(err instanceof DumpError)) throw err;
        }
      }
    }
    if (blockers.length) throw new BlockedDump(blockers);
  }

  /** An fd of the tree holding target t of epoll p, if any:
   * the epoll's task at the registered number first, then its other fds,
   * then the other tasks' (a target added by another task sharing the
   * epoll, or one whose fd was closed while another still holds it). */
  private holderOf(p: Pending, t: EpollTarget, pids: number[]): [number, number] | undefined {
    const { pid, fd: efd } = p.fd;
    if (t.same) return [pid, t.tfd];
    const holders = this.holders(pids).get(`${userDev(t.sdev)}:${t.ino}`) ?? [];
    const ordered = [...holders.filter(([q]) => q === pid), ...holders.filter(([q]) => q !== pid)];
    return ordered.find(([q, n]) => isEpollTarget(q, n, pid, efd, t.tfd, t.toff));
  }

  private holders(pids: number[]): Map<string, [number, number][]> {
    if (this.index) return this.index;
    const index = new Map<string, [number, number][]>();
    const add = (st: { dev: number; ino: number | null }, q: number, n: number) => {
      const key = `${st.dev}:${st.ino}`;
      const list = index.get(key);
      if (list) list.push([q, n]);
      else index.set(key, [[q, n]]);
    };
    for (const q of pids) {
      const table = this.tables.get(q);
      if (table) {
        for (const { fd, dev, ino } of readFdStats(table)) add({ dev, ino }, q, fd);
        continue;
      }
      for (const n of listFds(q)) {
        try {
          add(Deno.statSync(`/proc/${q}/fd/${n}`), q, n);
        } catch { /* closed */ }
      }
    }
    return this.index = index;
  }

  private entry(p: Pending, t: EpollTarget, [q, n]: [number, number]): EpollTargetEntry {
    const fileId = this.ctx.fileOf(q, n);
    let events = t.events;
    let readyNow = 0;
    // A fired EPOLLONESHOT registration keeps only its private bits; the
    // kernel adds EPOLLERR|EPOLLHUP to any it is given again. Restore can
    // fire it once more in the task, asking only for what the file is ready
    // for now, to leave it disarmed exactly.
    if (disarmedOneShot(events)) {
      const link = Deno.readLinkSync(`/proc/${q}/fd/${n}`);
      if (readyAtOnce(link, Deno.statSync(`/proc/${q}/fd/${n}`))) {
        readyNow = this.readiness(q, n) & READY;
      }
      if (!readyNow) {
        log.warn(
          `${p.fd.where}: the EPOLLONESHOT registration of fd ${t.tfd}, disarmed, is restored ` +
            `armed for EPOLLERR/EPOLLHUP only (its file is not ready now, or its readiness comes ` +
            `later in a restore): a later error ` +
            `or hang-up on it is reported once`,
        );
      }
    }
    events >>>= 0;
    return newMessage(EpollTargetSchema, { tfd: t.tfd, events, data: t.data, fileId, readyNow });
  }

  /** What the file at fd n of pid is ready for now (poll of a copy of it). */
  private readiness(pid: number, n: number): number {
    const copy = this.ctx.copyFd(pid, n, `fd ${n} of pid ${pid}`);
    try {
      return fdops.poll(copy, READY);
    } finally {
      fdops.close(copy);
    }
  }
}

/** The kernel's dev_t (major << 20 | minor) as stat(2) gives it. */
function userDev(kdev: number): number {
  const major = kdev >>> 20, minor = kdev & 0xfffff;
  return (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);
}

/** struct epoll_event, packed on x86_64: u32 events, u64 data. */
function epollEvent(events: number, data: bigint): Uint8Array {
  EVENT_VIEW.setUint32(0, events >>> 0, true);
  EVENT_VIEW.setBigUint64(4, data, true);
  return EVENT.slice();
}

/** Where epollEvent lays one out (ten thousand, one view). */
const EVENT = new Uint8Array(12);
const EVENT_VIEW = new DataView(EVENT.buffer);

export const epoll: FileKindOps = {
  name: "epoll",
  kinds: [FileKind.FILE_EPOLL],

  claims: (fd) => fd.link === "anon_inode:[eventpoll]",

  prefetch(fds, ctx) {
    if (fds.length) ctx.local(epoll, () => new EpollDump(ctx)).tables.set(fds[0].pid, fdStats(fds));
  },

  dump(fd, ctx) {
    const state = ctx.local(epoll, () => new EpollDump(ctx));
    const body = create(EpollFileSchema, { flags: fd.flags & O.NONBLOCK });
    const known = state.tables.get(fd.pid);
    const text = fd.infoBytes?.() ?? fd.infoText;
    state.pending.push({ fd, body, targets: epollTargets(fd.pid, fd.fd, text, known) });
    return { kind: FileKind.FILE_EPOLL, epoll: body };
  },

  validate(f, fail) {
    const e = f.epoll ?? fail("epoll details missing");
    for (const t of e.targets) {
      if (t.tfd < 0) fail(`epoll target fd ${t.tfd} is negative`);
      if (t.fileId === f.id) fail(`epoll #${f.id} has itself as a target`);
    }
  },

  open(f) {
    const n = anonfd.epollCreate(EPOLL_CLOEXEC);
    if (f.epoll!.flags & O.NONBLOCK) fdops.fcntl(n, F_SETFL, O.NONBLOCK);
    return n;
  },

  taskOps(f, holding, ctx) {
    if (!holding.first) return [];
    const ops: PlanOp[] = [];
    const targets = f.epoll!.targets;
    const where = `epoll #${f.id} of pid ${holding.task.pid}`;
    // Disarmed EPOLLONESHOT registrations first, fired once while they are
    // the only ones (epoll_wait would take the others' events too).
    const disarmed = targets.filter((t) => t.readyNow !== 0);
    for (const t of disarmed) push(ops, add(f, t, holding.fds, ctx, where, t.readyNow));
    if (disarmed.length) {
      const epfd = holding.fds[0];
      ops.push({
        op: OP.SYSCALL,
        phase: PHASE.AFTER_FDS,
        a: [
          NR_EPOLL_WAIT,
          epfd,
          { bytes: new Uint8Array(12 * disarmed.length) },
          disarmed.length,
          0,
        ],
        what: `disarming the fired EPOLLONESHOT registrations of ${where} (fd ${epfd})`,
      });
    }
    for (const t of targets) {
      if (!disarmed.includes(t)) push(ops, add(f, t, holding.fds, ctx, where));
    }
    return ops;
  },
};

/** Appends more to ops, an UNSWAP_FD's index (within more) made one within ops. */
function push(ops: PlanOp[], more: PlanOp[]): void {
  const base = ops.length;
  for (const op of more) {
    ops.push(op.op === OP.UNSWAP_FD ? { ...op, a: [op.a[0], Number(op.a[1]) + base] } : op);
  }
}

/** The ops adding target t to epoll f in the task: at its own number when
 * the task's fd there is that file, else with the file put there for the
 * call. `ready` (a disarmed one-shot registration) asks only for that. */
function add(
  f: FileEntry,
  t: EpollTargetEntry,
  epolls: number[],
  ctx: TaskOpsContext,
  where: string,
  ready = 0,
): PlanOp[] {
  const events = ready ? (t.events & PRIVATE) | ready : t.events;
  const what = `adding fd ${t.tfd} (file #${t.fileId}) to ${where}`;
  // The epoll under a number the swap does not touch.
  const epfd = epolls.find((n) => n !== t.tfd) ?? ctx.serviceFd(f.id, where);
  const ctl: PlanOp = {
    op: OP.SYSCALL,
    phase: PHASE.AFTER_FDS,
    a: [NR_EPOLL_CTL, epfd, EPOLL_CTL_ADD, t.tfd, { bytes: epollEvent(events, t.data) }],
    what,
  };
  if (ctx.fileAt(t.tfd) === t.fileId) return [ctl];
  return [
    {
      op: OP.SWAP_FD,
      phase: PHASE.AFTER_FDS,
      a: [t.tfd, ctx.serviceFd(t.fileId, what)],
      what: `putting file #${t.fileId} at fd ${t.tfd} to add it to ${where}`,
    },
    ctl,
    { op: OP.UNSWAP_FD, phase: PHASE.AFTER_FDS, a: [t.tfd, 0], what },
  ];
}
