// One task's restore plan from its images: the fds ckpt opened moved to their
// numbers, service fds (pages, cwd, root, exe, mapped files) above them, the
// memory plan, and everything in its core (signals, creds, limits, threads,
// children, session), in the form plan_buffer.ts encodes for native code.
import type { FileEntry, TaskCore } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { type ImageDir, pagemapName, pagesName } from "../images/dir.ts";
import { type PreDumpSet, resolveRuns, type SourceOf } from "../images/chain.ts";
import { checkPagesHeader } from "../images/format.ts";
import { fd as fdops, O, planLayout } from "../native/mod.ts";
import { readLimits } from "../proc/status.ts";
import { log } from "../util/log.ts";
import type { OpenedFiles } from "../files/open.ts";
import { lockOps } from "../files/locks.ts";
import { posixTimerOps } from "../task/posix_timers.ts";
import { vmFlagsOps } from "../task/vma_flags.ts";
import { type Born, cttyOps } from "../files/ctty.ts";
import {
  type Authority,
  authorityOf,
  type CheckPolicy,
  expectOf,
  lookupAs,
  openForKernelAs,
} from "../files/authority.ts";
import { S_IF } from "../native/fsops.ts";
import { deletedDir } from "../files/deleted_dir.ts";
import type { RestoreContext } from "../files/kind.ts";
import { EXTERNAL_FILL_MIN, fillBytes } from "./fill.ts";
import { planMemory, type SharedObjects, TASK_SIZE } from "./memory.ts";
import {
  type FdMove,
  FLAG_EXTERNAL_FILL,
  FLAG_JOIN_PGID,
  FLAG_LAZY,
  FLAG_ROOT,
  FLAG_SETPGID,
  FLAG_SETSID,
  FLAG_SHARED_FILES,
  FLAG_SUBREAPER,
  LAYOUT,
  type Plan,
  type PlanChild,
  type PlanCreds,
} from "./plan_buffer.ts";

import type { RestoreOptions, TaskImages } from "./restore.ts";
import type { SelfSession } from "./sessions.ts";
import { seccompOps } from "./seccomp.ts";
import { waitOps } from "./waits.ts";
import type { NamespacePlan } from "../ns/plan.ts";
import { pidAsSeenBy, setTidOf } from "../ns/pid.ts";
import { attachOps, checkHostSegment } from "../ns/sysv_vma.ts";
import type { ExternalFill, PagesSource } from "./drive.ts";

export interface TreePlace {
  sharedParent?: BuiltPlan;
  root: boolean;
  shellJob: boolean;
  children: PlanChild[];
  /** What the task does about its session and group (sessions.ts); absent:
   * a session leader, or a group leader in its parent's session. */
  session?: SelfSession;
  /** Who forks it and when (sessions.ts): the terminal it is born with. */
  born?: Born;
  /** Every task of the tree by pid (to name pids as a task in a PID
   * namespace sees them). */
  tree?: Map<number, TaskCore>;
  /** The namespaces the root is restored into. */
  ns?: NamespacePlan;
}

/** The pages files a task's memory comes from, numbered as its pieces'
 * src: 0 is its own pages-PID.img (the restorer's), the rest (its other
 * parts, and parent images' files) are opened when first named and listed
 * in `others` (src k is others[k - 1]). */
class PagesSources {
  readonly others: PagesSource[] = [];
  private readonly known = new Map<string, number>();

  constructor(
    private readonly dirs: string[],
    private readonly pid: number,
    private readonly parentFds: number[],
  ) {}

  readonly sourceOf: SourceOf = (level, part) => {
    if (level === 0 && part === 0) return 0;
    const path = `${this.dirs[level]}/${pagesName(this.pid, part)}`;
    let n = this.known.get(path);
    if (n === undefined) {
      const fd = fdops.open(path, O.RDONLY | O.CLOEXEC);
      this.parentFds.push(fd);
      this.others.push({ fd, path });
      this.known.set(path, n = this.others.length);
    }
    return n;
  };
}

/** One task's plan: fds moved from ckpt's, service fds (pages, cwd, root,
 * exe, mapped files) above them, memory, and everything in its core. */
export function taskPlan(
  dir: ImageDir,
  t: TaskImages,
  files: Map<number, FileEntry>,
  opened: OpenedFiles,
  shmem: SharedObjects,
  parentFds: number[],
  opts: RestoreOptions,
  external: Map<number, ExternalFill>,
  lazy: Map<number, ExternalFill>,
  place: TreePlace,
  chain: PreDumpSet[] = [],
): BuiltPlan {
  const core = t.core;
  const pid = core.pid;
  const shared = place.sharedParent;
  // A task sharing its parent's fd table has the parent's fds; its own
  // service fds are laid out by the parent, above the parent's.
  const moves = shared ? [] : t.fds!.fds.map((e) => ({
    src: opened.get(e.fileId, `fd ${e.fd} of pid ${pid}`, core),
    dst: e.fd,
    cloexec: e.cloexec,
  }));
  const serviceMoves: FdMove[] = [];
  const serviceLo = shared ? shared.nextFree : Math.max(2, ...moves.map((m) => m.dst)) + 1;
  let nextService = serviceLo;
  const service = (parentFd: number): number => {
    parentFds.push(parentFd);
    serviceMoves.push({ src: parentFd, dst: nextService, cloexec: true });
    return nextService++;
  };
  const pagesPath = dir.file(t.pagemap!.pagesFile);
  const pagesFd = fdops.open(pagesPath, O.RDONLY | O.CLOEXEC);
  parentFds.push(pagesFd);
  const head = new Uint8Array(4096);
  fdops.pread(pagesFd, head, 0);
  checkPagesHeader(pagesPath, head);
  const plan = basePlan(core, place);
  // A task sharing its parent's fd table has its table's ops run there.
  if (!shared) {
    plan.ops = opened.taskOps(core, t.fds!.fds, (n) => service(opened.dupAbove(n)));
  }
  plan.ops.push(
    ...lockOps(pid, t.fds!, files, opened),
    ...vmFlagsOps(core, t.mm!.vmas),
    ...posixTimerOps(core),
  );
  plan.ops.push(...cttyOps(core, place, opened));
  plan.ops.push(...seccompOps(core), ...waitOps(core, t.mm!.vmas));
  plan.pagesFd = service(fdops.dupAbove(pagesFd, 100));
  // cwd, root, exe and mapped files are looked up as the task itself, with
  // no symlink followed, and must be what the dump saw.
  const access = { authority: authorityOf(core), policy: opened.policy, context: opened.context };
  // In a mount namespace of the tree's own, once its mounts exist.
  const later = (open: () => number) => opened.later(open, core);
  plan.cwdFd = service(later(() => openDir(files, core, core.cwdFileId, "cwd", access)));
  const root = files.get(core.rootFileId)?.reg?.path ?? "/";
  plan.rootFd = root === "/"
    ? -1
    : service(later(() => openDir(files, core, core.rootFileId, "root", access)));
  const exe = files.get(core.mm?.exeFileId ?? 0)?.reg;
  plan.exeFd = exe
    ? service(later(() =>
      openForKernelAs(
        access.authority,
        exe.path,
        false,
        `pid ${pid}: executable`,
        expectOf(exe, S_IF.REG),
        access.policy,
        true,
      )
    ))
    : -1;
  const sources = new PagesSources([dir.path, ...chain.map((c) => c.dir)], pid, parentFds);
  const pieces = resolveRuns(
    pid,
    t.pagemap!.runs,
    chain,
    dir.file(pagemapName(pid)),
    sources.sourceOf,
  ).map((p) => t.pagemap!.runsCrc32c ? p : { ...p, crc: undefined });
  const mem = planMemory(
    pid,
    t.mm!.vmas,
    pieces,
    files,
    access,
    service,
    shmem,
    (id, where) => opened.get(id, where, core),
    opts.lazyPages,
    { dup: (n) => opened.dupAbove(n), open: later },
  );
  plan.vmas = mem.vmas;
  plan.fills = mem.fills;
  for (const a of mem.sysv) {
    if (place.ns?.ownsIpc) place.ns.checkSegment(pid, a);
    else checkHostSegment(pid, a);
    plan.ops.push(...attachOps(a));
  }
  const others = sources.others;
  if (mem.lazyFills.length) {
    plan.flags |= FLAG_LAZY;
    lazy.set(pid, { pagesFd, pagesPath, fills: mem.lazyFills, others });
  }
  // The restorer reads only its own pages file: pages in other files (other
  // parts, parent images) are put in by ckpt.
  if (mem.fills.some((f) => (f.src ?? 0) > 0) || fillBytes(mem.fills) >= EXTERNAL_FILL_MIN) {
    plan.flags |= FLAG_EXTERNAL_FILL;
    external.set(pid, { pagesFd, pagesPath, fills: mem.fills, others });
  }
  plan.specials = mem.specials;
  plan.serviceLo = serviceLo;
  plan.serviceHi = nextService - 1;
  if (shared) {
    plan.flags |= FLAG_SHARED_FILES;
    plan.statusFd = shared.plan.statusFd;
    plan.fds = [];
    shared.plan.fds.push(...serviceMoves);
    shared.nextFree = nextService;
    return { plan, occupied: mem.occupied, nextFree: nextService };
  }
  plan.statusFd = nextService;
  plan.fds = [...moves, ...serviceMoves];
  return { plan, occupied: mem.occupied, nextFree: nextService + 1 };
}

/** A task's plan before encoding: a task sharing its fd table adds its
 * service fds to its parent's, from nextFree on. */
export interface BuiltPlan {
  plan: Plan;
  occupied: [bigint, bigint][];
  nextFree: number;
}

export function checkLayout(): void {
  const got = planLayout();
  if (got.some((v, i) => v !== LAYOUT[i])) {
    throw new RestoreError(
      `native library plan layout ${got} does not match ${LAYOUT}: rebuild it`,
    );
  }
}

/** The task's cwd or root as an O_PATH fd: fchdir needs no more (only
 * search permission on the way there, as the task had), and a real open
 * (and its close, after the tree runs) would be events a program watching
 * the directory sees. */
function openDir(
  files: Map<number, FileEntry>,
  core: TaskCore,
  id: number,
  what: string,
  access: { authority: Authority; policy: CheckPolicy; context: RestoreContext },
): number {
  const r = files.get(id)?.reg;
  if (!r?.path) throw new RestoreError(`the ${what} directory is missing from files.img`);
  if (r.deleted) {
    // Deleted while the task was in it: made again and removed, so the task
    // is in a deleted directory again ("PATH (deleted)", getcwd ENOENT).
    const where = `pid ${core.pid}: the ${what} directory`;
    return deletedDir(access.context, access.authority, r, O.PATH, where);
  }
  return lookupAs(
    access.authority,
    r.path,
    `pid ${core.pid}: the ${what} directory`,
    expectOf(r, S_IF.DIR),
    access.policy,
  );
}

export function basePlan(core: TaskCore, place: TreePlace): Plan {
  const t = core.threads[0];
  const pid = core.pid;
  const session = place.session ?? {
    setsid: core.sid === pid,
    setpgid: core.pgid === pid && core.sid !== pid,
    joinPgid: 0,
    subreaper: core.childSubreaper,
  };
  let flags = (place.root ? FLAG_ROOT : 0) | (place.ns?.taskFlags(place.root) ?? 0);
  if (session.setsid) flags |= FLAG_SETSID;
  if (session.setpgid) flags |= FLAG_SETPGID;
  if (session.joinPgid) flags |= FLAG_JOIN_PGID;
  if (session.subreaper) flags |= FLAG_SUBREAPER;
  // Pids the task itself hands to the kernel are its own namespace's.
  const tree = place.tree ?? new Map([[pid, core]]);
  const joinPgid = session.joinPgid ? pidAsSeenBy(session.joinPgid, core, tree) : 0;
  if (session.joinPgid && !joinPgid) {
    throw new RestoreError(
      `pid ${pid} was in process group ${session.joinPgid}, outside its PID namespace; this ` +
        `cannot be restored`,
    );
  }
  const ours = new Map(readLimits("self").map((l) => [l.resource, l.max]));
  const rlimits = core.rlimits.map((l) => {
    const cap = ours.get(l.resource) ?? l.max;
    if (l.max <= cap) return { resource: l.resource, cur: l.cur, max: l.max };
    log.warn(
      `pid ${pid}: limit ${l.resource} hard value lowered to ckpt's own (${cap}); raising it needs CAP_SYS_RESOURCE`,
    );
    return { resource: l.resource, cur: l.cur < cap ? l.cur : cap, max: cap };
  });
  const sigactions = Array.from({ length: 64 }, (_, i) => {
    const a = core.sigactions.find((s) => s.signo === i + 1);
    return a
      ? { handler: a.handler, flags: a.flags, restorer: a.restorer, mask: a.mask }
      : { handler: 0n, flags: 0n, restorer: 0n, mask: 0n };
  });
  // The main thread's own credentials (older images: the task's).
  const c = t.creds ?? core.creds!;
  const ids = place.ns?.creds(pid, c) ?? c;
  const m = core.mm!;
  return {
    flags,
    pid,
    statusFd: -1,
    pagesFd: -1,
    exeFd: -1,
    cwdFd: -1,
    rootFd: -1,
    serviceLo: 0,
    serviceHi: 0,
    taskSize: TASK_SIZE,
    fds: [],
    vmas: [],
    fills: [],
    specials: [],
    hints: [],
    sigactions,
    signals: [
      ...core.sharedPending.map((s) => ({ tid: 0, signo: s.signo, info: s.siginfo })),
      ...core.threads.flatMap((th) =>
        th.pending.map((s) => ({ tid: th.tid, signo: s.signo, info: s.siginfo }))
      ),
    ],
    groups: ids.groups,
    auxv: m.auxv,
    rlimits,
    altstack: { sp: t.altstackSp, size: t.altstackSize, flags: t.altstackFlags },
    personality: core.personality,
    umask: core.umask,
    pdeathsig: core.pdeathsig,
    tidAddress: t.tidAddress,
    robust: { head: t.robustHead, len: t.robustLen },
    rseq: { addr: t.rseqAddr, len: t.rseqLen, sig: t.rseqSig },
    itimers: [0, 1, 2].map((w) => {
      const it = core.itimers.find((x) => x.which === w);
      return {
        intervalSec: it?.intervalSec ?? 0n,
        intervalUsec: it?.intervalUsec ?? 0n,
        valueSec: it?.valueSec ?? 0n,
        valueUsec: it?.valueUsec ?? 0n,
      };
    }),
    mm: m,
    comm: t.comm || core.comm,
    uids: ids.uids,
    gids: ids.gids,
    caps: { eff: c.capEff, prm: c.capPrm, inh: c.capInh, bnd: c.capBnd, amb: c.capAmb },
    noNewPrivs: t.noNewPrivs,
    dumpable: c.dumpable ? 1 : 0,
    children: place.children,
    threads: core.threads.slice(1).map((th) => ({
      tid: th.tid,
      altstack: { sp: th.altstackSp, size: th.altstackSize, flags: th.altstackFlags },
      tidAddress: th.tidAddress,
      robust: { head: th.robustHead, len: th.robustLen },
      rseq: { addr: th.rseqAddr, len: th.rseqLen, sig: th.rseqSig },
      comm: th.comm,
      creds: threadCreds(
        { ...(th.creds ?? c), ...place.ns?.creds(pid, th.creds ?? c) },
        th.noNewPrivs,
      ),
      tids: setTidOf(th.nsTids, place.ns?.freeOuterPids),
    })),
    joinPgid,
    ops: [],
  };
}

function threadCreds(c: NonNullable<TaskCore["creds"]>, noNewPrivs: boolean): PlanCreds {
  return {
    uids: c.uids,
    gids: c.gids,
    caps: { eff: c.capEff, prm: c.capPrm, inh: c.capInh, bnd: c.capBnd, amb: c.capAmb },
    groups: c.groups,
    noNewPrivs,
  };
}
