// Everything about one frozen task except its memory and files: registers,
// FPU, signals, timers, thread-level kernel state, creds, limits, mm fields.
import { create } from "@bufbuild/protobuf";
import {
  CredsSchema,
  ITimerSchema,
  MmFieldsSchema,
  type QueuedSignal,
  QueuedSignalSchema,
  RlimitSchema,
  SigActionSchema,
  SyscallStateSchema,
  type TaskCore,
  TaskCoreSchema,
  type ThreadCore,
  ThreadCoreSchema,
} from "../gen/ckpt/images_pb.ts";
import { ptrace } from "../native/mod.ts";
import { listThreads, readProcBytes, readProcText } from "../proc/read.ts";
import { readLimits, readStat, readStatus, statusHex, statusInts } from "../proc/status.ts";
import { Injector, SYS } from "./inject.ts";
import { syscallState } from "./regs.ts";
import { BlockedDump } from "../files/collect.ts";
import { collectPosixTimers } from "../task/posix_timers.ts";
import { noteVmFlags } from "../task/vma_flags.ts";
import { collectSeccomp, type TaskSeccomp } from "./seccomp.ts";
import { readTimespec } from "./waits.ts";
import type { MeasuredWait } from "./freeze.ts";
import { DumpError } from "../errors.ts";

const PR_GET_PDEATHSIG = 2;
const PR_GET_CHILD_SUBREAPER = 37;
const PR_GET_DUMPABLE = 3;
const PR_GET_TID_ADDRESS = 40;
const SIGKILL = 9, SIGSTOP = 19, SIGCHLD = 17;

function u64(dv: DataView, off: number): bigint {
  return dv.getBigUint64(off, true);
}

/** A thread's own queue, or the process-wide one, left queued. */
function queuedSignals(tid: number, shared: boolean): QueuedSignal[] {
  return ptrace.peekSiginfo(tid, shared).map((info) =>
    create(QueuedSignalSchema, {
      shared,
      signo: new DataView(info.buffer).getInt32(0, true),
      siginfo: info,
    })
  );
}

/** A thread's own credentials (the kernel keeps them per thread). */
function threadCreds(pid: number, tid: number, dumpable: boolean) {
  const status = readStatus(pid, tid);
  return create(CredsSchema, {
    uids: statusInts(status, "Uid"),
    gids: statusInts(status, "Gid"),
    groups: statusInts(status, "Groups"),
    capInh: statusHex(status, "CapInh"),
    capPrm: statusHex(status, "CapPrm"),
    capEff: statusHex(status, "CapEff"),
    capBnd: statusHex(status, "CapBnd"),
    capAmb: statusHex(status, "CapAmb"),
    dumpable,
  });
}

export function collectThread(
  pid: number,
  tid: number,
  inj: Injector,
  waits?: Map<number, MeasuredWait>,
): ThreadCore {
  const regs = ptrace.getRegs(tid);
  const sc = syscallState(regs, {
    measuredNs: waits?.get(tid)?.leftNs,
    readTimespec: (addr) => readTimespec(pid, addr),
  });
  const xsave = ptrace.getXstate(tid);
  const pending = queuedSignals(tid, false);
  inj.call(SYS.sigaltstack, [0, inj.scratch], "sigaltstack");
  const ss = inj.read(24);
  inj.call(SYS.prctl, [PR_GET_TID_ADDRESS, inj.scratch], "prctl(PR_GET_TID_ADDRESS)");
  const tidAddress = u64(inj.read(8), 0);
  const robust = ptrace.getRobustList(tid);
  let rseq = { addr: 0n, len: 0, sig: 0 };
  try {
    rseq = ptrace.getRseq(tid);
  } catch { /* kernels without rseq configuration readout: none registered */ }
  return create(ThreadCoreSchema, {
    tid,
    regs,
    xsave,
    sigmask: ptrace.getSigmask(tid),
    pending,
    altstackSp: u64(ss, 0),
    altstackFlags: ss.getInt32(8, true),
    altstackSize: u64(ss, 16),
    tidAddress,
    robustHead: robust.head,
    robustLen: robust.len,
    rseqAddr: rseq.addr,
    rseqLen: rseq.len,
    rseqSig: rseq.sig,
    comm: readProcText(pid, `task/${tid}/comm`).trimEnd(),
    syscall: create(SyscallStateSchema, {
      nr: sc.nr,
      ret: sc.ret,
      action: sc.action,
      remainingNs: sc.remainingNs,
      remainingFrom: sc.remainingFrom,
    }),
  });
}

/** A zombie keeps only its identity and how it died (not reaped: its
 * parent is to collect that status after restore). */
export function collectZombie(pid: number): TaskCore {
  const stat = readStat(pid);
  const status = Number(stat.field(52));
  if (listThreads(pid).length > 1) {
    throw new DumpError(
      `pid ${pid}: its main thread has exited while its other threads run on; ` +
        `such a process cannot be dumped yet`,
    );
  }
  if (status & 0x80) {
    // The flag is the kernel's record that a core file was written; it
    // cannot be set again without dumping core again.
    throw new DumpError(
      `pid ${pid} is a zombie that dumped core (wait status 0x${status.toString(16)}); ` +
        `its exit status cannot be recreated: let its parent reap it first`,
    );
  }
  return create(TaskCoreSchema, {
    pid,
    ppid: Number(stat.field(4)),
    pgid: Number(stat.field(5)),
    sid: Number(stat.field(6)),
    comm: stat.comm,
    zombie: true,
    exitStatus: Number(stat.field(52)),
    exitSignal: Number(stat.field(38)),
  });
}

/** Runs `fn` with an injector per thread, and unmaps every scratch page
 * afterwards, before the task's memory is read. */
export function collectTask(
  pid: number,
  tids: number[],
  known: { waits?: Map<number, MeasuredWait>; seccomp?: TaskSeccomp } = {},
): TaskCore {
  const waits = known.waits;
  const seccomp = known.seccomp ?? collectSeccomp(pid, tids);
  const leader = new Injector(tids[0]);
  const injectors = new Map(
    tids.map((tid) => [tid, tid === tids[0] ? leader : new Injector(tid, leader)]),
  );
  try {
    return collectWith(pid, tids, injectors, seccomp, waits);
  } finally {
    for (const inj of injectors.values()) inj.release();
  }
}

function collectWith(
  pid: number,
  tids: number[],
  injectors: Map<number, Injector>,
  seccomp: TaskSeccomp,
  waits?: Map<number, MeasuredWait>,
): TaskCore {
  const inj = injectors.get(pid) ?? injectors.get(tids[0])!;
  const stat = readStat(pid);
  const status = readStatus(pid);
  const threads = tids.map((tid) => collectThread(pid, tid, injectors.get(tid)!, waits));

  const sigactions = [];
  // Every injected call is a moment when a ckpt killed from outside would
  // leave the task with swapped registers, so only dispositions that can
  // matter are read: handled or ignored signals (SigCgt/SigIgn), and SIGCHLD,
  // whose SA_NOCLDWAIT/SA_NOCLDSTOP act even at SIG_DFL. For any other
  // signal the action is SIG_DFL, whose flags and mask never come into play.
  const disposed = statusHex(status, "SigCgt") | statusHex(status, "SigIgn");
  for (let sig = 1; sig <= 64; sig++) {
    if (sig === SIGKILL || sig === SIGSTOP) continue;
    if (sig !== SIGCHLD && ((disposed >> BigInt(sig - 1)) & 1n) === 0n) continue;
    inj.call(SYS.rt_sigaction, [sig, 0, inj.scratch, 8], `rt_sigaction(${sig})`);
    const a = inj.read(32);
    sigactions.push(create(SigActionSchema, {
      signo: sig,
      handler: u64(a, 0),
      flags: u64(a, 8),
      restorer: u64(a, 16),
      mask: u64(a, 24),
    }));
  }
  const itimers = [0, 1, 2].map((which) => {
    inj.call(SYS.getitimer, [which, inj.scratch], `getitimer(${which})`);
    const t = inj.read(32);
    return create(ITimerSchema, {
      which,
      intervalSec: t.getBigInt64(0, true),
      intervalUsec: t.getBigInt64(8, true),
      valueSec: t.getBigInt64(16, true),
      valueUsec: t.getBigInt64(24, true),
    });
  });
  inj.call(SYS.prctl, [PR_GET_PDEATHSIG, inj.scratch], "prctl(PR_GET_PDEATHSIG)");
  const pdeathsig = inj.read(4).getInt32(0, true);
  const dumpable = inj.call(SYS.prctl, [PR_GET_DUMPABLE], "prctl(PR_GET_DUMPABLE)");
  inj.call(SYS.prctl, [PR_GET_CHILD_SUBREAPER, inj.scratch], "prctl(PR_GET_CHILD_SUBREAPER)");
  const subreaper = inj.read(4).getInt32(0, true) !== 0;
  for (const th of threads) {
    const sc = seccomp.threads.get(th.tid);
    th.creds = threadCreds(pid, th.tid, dumpable === 1n);
    th.seccompMode = sc?.mode ?? 0;
    th.seccompFilter = sc?.filter ?? 0;
    th.noNewPrivs = sc?.noNewPrivs ?? false;
  }
  const brk = inj.call(12, [0], "brk(0)");
  const sharedPending = queuedSignals(pid, true);

  const uids = statusInts(status, "Uid");
  const gids = statusInts(status, "Gid");
  const timers = collectPosixTimers(pid, tids, inj, statusHex(status, "CapEff"));
  const core = create(TaskCoreSchema, {
    pid,
    ppid: Number(stat.field(4)),
    pgid: Number(stat.field(5)),
    sid: Number(stat.field(6)),
    ttyNr: Number(stat.field(7)),
    ttyPgrp: Number(stat.field(8)),
    comm: stat.comm,
    exe: Deno.readLinkSync(`/proc/${pid}/exe`),
    threads,
    sigactions,
    sharedPending,
    itimers,
    personality: parseInt(readProcText(pid, "personality").trim(), 16),
    umask: parseInt(status.get("Umask") ?? "22", 8),
    pdeathsig,
    rlimits: readLimits(pid).map((l) => create(RlimitSchema, l)),
    creds: create(CredsSchema, {
      uids,
      gids,
      groups: statusInts(status, "Groups"),
      capInh: statusHex(status, "CapInh"),
      capPrm: statusHex(status, "CapPrm"),
      capEff: statusHex(status, "CapEff"),
      capBnd: statusHex(status, "CapBnd"),
      capAmb: statusHex(status, "CapAmb"),
      dumpable: dumpable === 1n,
    }),
    mm: create(MmFieldsSchema, {
      startCode: stat.field(26),
      endCode: stat.field(27),
      startStack: stat.field(28),
      startData: stat.field(45),
      endData: stat.field(46),
      startBrk: stat.field(47),
      brk,
      argStart: stat.field(48),
      argEnd: stat.field(49),
      envStart: stat.field(50),
      envEnd: stat.field(51),
      auxv: readProcBytes(pid, "auxv"),
    }),
    exitSignal: Number(stat.field(38)),
    posixTimers: timers.timers,
    seccompFilters: seccomp.filters,
    childSubreaper: subreaper,
  });
  // Read while the scratch page exists: it shows what new mappings get.
  const refused = [...timers.refused, ...noteVmFlags(pid, core, inj.scratch)];
  if (refused.length) throw new BlockedDump(refused.map((message) => ({ pid, message })));
  return core;
}
