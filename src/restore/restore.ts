// ckpt restore: read and check every image, open everything the task needs,
// build one plan, fork the task with its PID, let the restorer rebuild it, set
// the final registers over ptrace, and let it go. Any failure kills what was
// started; the images are never modified.
import type { FileEntry, TaskCore } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { ImageDir } from "../images/dir.ts";
import { checkPagesHeader } from "../images/format.ts";
import { validateImages } from "../images/validate.ts";
import {
  decodeWait,
  fd as fdops,
  kill,
  NativeError,
  O,
  planLayout,
  ptrace,
  PTRACE_O_EXITKILL,
  regionSize,
  restoreSpawn,
  wait,
  WALL,
  WNOHANG,
} from "../native/mod.ts";
import { errnoText } from "../native/errno.ts";
import { processExists } from "../proc/read.ts";
import { readLimits, readStat } from "../proc/status.ts";
import { log } from "../util/log.ts";
import { formatMs, hex } from "../util/units.ts";
import { type FileValidation, OpenedFiles } from "./files.ts";
import { planMemory, regionHints, TASK_SIZE } from "./memory.ts";
import { encodePlan, FLAG_SETPGID, FLAG_SETSID, LAYOUT, type Plan } from "./plan_buffer.ts";

export interface RestoreOptions {
  dir: string;
  /** Return once the tree runs instead of waiting for it (CRIU's -d). */
  detach?: boolean;
  /** Restore a --shell-job dump into this terminal session. */
  shellJob?: boolean;
  fileValidation?: FileValidation;
  /** --inherit-fd: "pipe:[INO]" / "socket:[INO]" / path → ckpt's fd. */
  inherit?: Map<string, number>;
}

export interface Restored {
  pid: number;
  ms: number;
}

const STAGES = [
  "none",
  "child setup",
  "session",
  "file descriptors",
  "cwd/root",
  "restorer region",
  "vdso move",
  "unmapping ckpt's memory",
  "mapping memory",
  "reading pages",
  "memory protection",
  "mm fields (prctl PR_SET_MM_MAP)",
  "signal handlers",
  "interval timers",
  "thread state",
  "personality/umask/comm",
  "resource limits",
  "credentials",
  "pending signals",
];
const READY = 0x52454144595f434bn;

export function restore(opts: RestoreOptions): Restored {
  const t0 = performance.now();
  checkLayout();
  const dir = ImageDir.open(opts.dir);
  const inv = dir.readInventory();
  if (inv.pids.length !== 1) {
    throw new RestoreError(
      `${opts.dir} holds a tree of ${inv.pids.length} tasks; trees cannot be restored yet`,
    );
  }
  const pid = inv.rootPid;
  const core = dir.readCore(pid);
  const mm = dir.readMm(pid);
  const pagemap = dir.readPagemap(pid);
  const fdTable = dir.readFdTable(pid);
  const files = validateImages(
    opts.dir,
    inv,
    dir.readFiles(),
    new Map([[pid, { core, mm, pagemap, fdTable }]]),
  );
  const pagesPath = dir.file(pagemap.pagesFile);
  const shellJob = !!(opts.shellJob || inv.shellJob);
  if (inv.shellJob && !opts.shellJob) {
    log.info("dumped with --shell-job: restoring into this session");
  }

  if (processExists(pid)) {
    let who = "";
    try {
      who = ` by ${readStat(pid).comm}`;
    } catch { /* gone meanwhile */ }
    throw new RestoreError(`pid ${pid} is taken${who}; stop that process or restore elsewhere`);
  }
  if (core.threads.length !== 1) {
    throw new RestoreError(`pid ${pid} has ${core.threads.length} threads; cannot restore yet`);
  }

  const opened = new OpenedFiles(files, {
    validation: opts.fileValidation ?? "filesize",
    shellJob,
    inherit: opts.inherit ?? new Map(),
  });
  const parentFds: number[] = [];
  let child = 0;
  let status: [number, number] | undefined;
  try {
    const moves = fdTable.fds.map((e) => ({
      src: opened.get(e.fileId, `fd ${e.fd} of pid ${pid}`),
      dst: e.fd,
      cloexec: e.cloexec,
    }));
    const serviceLo = Math.max(2, ...moves.map((m) => m.dst)) + 1;
    let nextService = serviceLo;
    const service = (parentFd: number): number => {
      parentFds.push(parentFd);
      moves.push({ src: parentFd, dst: nextService, cloexec: true });
      return nextService++;
    };
    const pagesFd = fdops.open(pagesPath, O.RDONLY | O.CLOEXEC);
    const head = new Uint8Array(4096);
    fdops.pread(pagesFd, head, 0);
    checkPagesHeader(pagesPath, head);
    const plan = basePlan(core, shellJob);
    plan.pagesFd = service(pagesFd);
    plan.cwdFd = service(openDir(files, core.cwdFileId, "cwd"));
    const root = files.get(core.rootFileId)?.reg?.path ?? "/";
    plan.rootFd = root === "/" ? -1 : service(openDir(files, core.rootFileId, "root"));
    const exe = files.get(core.mm?.exeFileId ?? 0)?.reg?.path;
    plan.exeFd = exe ? service(fdops.open(exe, O.RDONLY | O.CLOEXEC)) : -1;
    const mem = planMemory(
      pid,
      mm.vmas,
      pagemap.runs,
      files,
      opts.fileValidation ?? "filesize",
      service,
    );
    plan.vmas = mem.vmas;
    plan.fills = mem.fills;
    plan.specials = mem.specials;
    plan.serviceLo = serviceLo;
    plan.serviceHi = nextService - 1;
    plan.statusFd = nextService;
    plan.fds = moves;
    const len = encodePlan(plan).length + 64 * 8 + 8;
    plan.hints = regionHints(mem.occupied, BigInt(regionSize(len)));
    const buf = encodePlan(plan);

    status = fdops.pipe(O.CLOEXEC | O.NONBLOCK);
    try {
      child = restoreSpawn(buf, pid, status[1]);
    } catch (err) {
      if (err instanceof NativeError && err.errno === 17) {
        throw new RestoreError(`pid ${pid} is taken; stop that process or restore elsewhere`);
      }
      if (err instanceof NativeError && err.errno === 1) {
        throw new RestoreError(
          `cannot create pid ${pid}: clone3 with set_tid needs CAP_CHECKPOINT_RESTORE or root`,
        );
      }
      throw err;
    }
    fdops.close(status[1]);
    status = [status[0], -1];
    const tSpawn = performance.now();
    log.debug(`pid ${pid}: plan ready after ${formatMs(tSpawn - t0)}`);
    awaitRestorer(child, status[0]);
    const tReady = performance.now();
    log.debug(`pid ${pid}: restorer done in ${formatMs(tReady - tSpawn)}`);
    finish(child, core);
    log.debug(`pid ${pid}: registers set and released in ${formatMs(performance.now() - tReady)}`);
    const ms = performance.now() - t0;
    log.info(`restored pid ${pid} in ${formatMs(ms)}`);
    child = 0;
    return { pid, ms };
  } catch (err) {
    if (child > 0) {
      kill(child, 9);
      try {
        wait(child, WALL);
      } catch { /* reaped */ }
    }
    throw err;
  } finally {
    opened.closeAll();
    for (const n of parentFds) fdops.close(n);
    if (status) { for (const n of status) if (n >= 0) fdops.close(n); }
  }
}

function checkLayout(): void {
  const got = planLayout();
  if (got.some((v, i) => v !== LAYOUT[i])) {
    throw new RestoreError(
      `native library plan layout ${got} does not match ${LAYOUT}: rebuild it`,
    );
  }
}

function openDir(files: Map<number, FileEntry>, id: number, what: string): number {
  const path = files.get(id)?.reg?.path;
  if (!path) throw new RestoreError(`the ${what} directory is missing from files.img`);
  try {
    return fdops.open(path, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  } catch (err) {
    throw new RestoreError(`cannot open the ${what} directory ${path}: ${(err as Error).message}`);
  }
}

export function basePlan(core: TaskCore, shellJob: boolean): Plan {
  const t = core.threads[0];
  const pid = core.pid;
  let flags = 0;
  if (core.sid === pid) flags |= FLAG_SETSID;
  else if (!shellJob) {
    throw new RestoreError(
      `pid ${pid} was in session ${core.sid}, which it did not lead; restore with --shell-job`,
    );
  }
  if (core.pgid === pid && core.sid !== pid) flags |= FLAG_SETPGID;
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
  const c = core.creds!;
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
    signals: [...core.sharedPending, ...t.pending].map((s) => ({
      shared: s.shared,
      signo: s.signo,
      info: s.siginfo,
    })),
    groups: c.groups,
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
    uids: c.uids,
    gids: c.gids,
    caps: { eff: c.capEff, prm: c.capPrm, inh: c.capInh, bnd: c.capBnd },
    dumpable: c.dumpable ? 1 : 0,
  };
}

/** Waits until the restorer stops at its final int3, or reports why not. */
function awaitRestorer(pid: number, statusFd: number): void {
  const deadline = performance.now() + 60_000;
  for (;;) {
    const st = wait(pid, WALL | WNOHANG);
    if (st) {
      if (st.stopped && st.stopSig === 5) {
        const regs = new BigUint64Array(ptrace.getRegs(pid).buffer);
        if (regs[10] === READY) {
          ptrace.setOptions(pid, PTRACE_O_EXITKILL);
          return;
        }
        throw new RestoreError(`restorer of pid ${pid} trapped unexpectedly at ${hex(regs[16])}`);
      }
      if (st.stopped) {
        const regs = new BigUint64Array(ptrace.getRegs(pid).buffer);
        throw new RestoreError(
          `restorer of pid ${pid} crashed with signal ${st.stopSig} at ${hex(regs[16])}`,
        );
      }
      throw new RestoreError(failureText(pid, st.raw, statusFd));
    }
    if (performance.now() > deadline) throw new RestoreError(`restorer of pid ${pid} timed out`);
    sleepMs(1);
  }
}

function failureText(pid: number, raw: number, statusFd: number): string {
  const rec = new Uint8Array(16);
  let n = 0;
  try {
    n = fdops.read(statusFd, rec);
  } catch { /* nothing written */ }
  if (n === 16) {
    const dv = new DataView(rec.buffer);
    const stage = STAGES[dv.getUint32(0, true)] ?? `stage ${dv.getUint32(0, true)}`;
    const errno = dv.getInt32(4, true);
    const detail = dv.getBigUint64(8, true);
    return `restoring pid ${pid} failed at ${stage} (detail ${hex(detail)}): ${errnoText(errno)}`;
  }
  const st = decodeWait(pid, raw);
  return st.signaled
    ? `restorer of pid ${pid} was killed by signal ${st.termSig}`
    : `restorer of pid ${pid} exited with status ${st.exitCode}`;
}

/** Dumped registers and FPU state, the restorer region unmapped, the signal
 * mask, and off it goes. A call interrupted at dump is restarted by the
 * kernel's own logic as the task leaves this stop. */
function finish(pid: number, core: TaskCore): void {
  const t = core.threads[0];
  const region = new BigUint64Array(ptrace.getRegs(pid).buffer);
  const [start, len] = [region[14], region[13]];
  ptrace.setRegs(pid, new Uint8Array(t.regs));
  const r = ptrace.injectSyscall(pid, 11, [start, len]);
  if (r !== 0n) {
    throw new RestoreError(`unmapping the restorer of pid ${pid} failed: ${errnoText(Number(-r))}`);
  }
  ptrace.setXstate(pid, new Uint8Array(t.xsave));
  ptrace.setSigmask(pid, t.sigmask);
  ptrace.detach(pid, 0);
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
function sleepMs(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}
