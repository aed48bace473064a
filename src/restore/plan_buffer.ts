// Writes the restore plan in the binary layout of ffi/restorer/abi.zig: a
// fixed header, then arrays addressed by offsets from the plan start. The
// layout is checked against the library at run time (planLayout) and in tests.
export const HEADER_SIZE = 704;
export const TREE_HEADER_SIZE = 32;
export const PLAN_MAGIC = 0x4e414c5054504b43n;
export const PLAN_VERSION = 1;
export const FLAG_SETSID = 1;
export const FLAG_SETPGID = 2;
export const FLAG_ROOT = 4;
export const FLAG_JOIN_PGID = 8;
export const FLAG_EXTERNAL_FILL = 16;
export const FLAG_SHARED_FILES = 32;
export const FLAG_LAZY = 64;
/** PR_SET_CHILD_SUBREAPER before any child is forked. */
export const FLAG_SUBREAPER = 128;
/** The root makes a time namespace before its first stop, enters it after. */
export const FLAG_NEW_TIME = 256;
/** The root makes a cgroup namespace after its first stop. */
export const FLAG_NEW_CGROUP = 512;
/** Keep the supplementary groups the task was forked with. */
export const FLAG_KEEP_GROUPS = 1024;
/** The root builds its mount namespace's tree after its first stop
 * (PHASE.MOUNTS), stops for ckpt to fill it, then sets its flags
 * (PHASE.MOUNTED). */
export const FLAG_MOUNTS = 2048;
export const VMA_FILL = 1;
export const VMA_LAZY = 2;

export const LAYOUT = [
  HEADER_SIZE,
  80,
  232,
  304,
  400,
  488,
  536,
  40,
  576,
  184,
  616,
  72,
  64,
  648,
  664,
];

/** Child kinds (abi.Child.kind) and what a zombie or ghost does to itself. */
export const CHILD = {
  TASK: 0,
  ZOMBIE: 1,
  /** A helper that sets up a session or group, forks its entries, exits. */
  GHOST: 2,
  SETSID: 1,
  SETPGID: 2,
  JOIN_PGID: 4,
  /** Forked before the forker's setsid. */
  EARLY: 8,
  /** Forked before the forker joins its group. */
  PREJOIN: 16,
} as const;

/** Plan ops (ffi/restorer/abi.zig Op): what a task runs on itself at a phase
 * of its restore. */
export const PHASE = {
  /** In the forked task, its fds at their numbers, before the restorer. */
  AFTER_FDS: 0,
  /** In the restorer: memory and mm fields in place. */
  AFTER_MEMORY: 1,
  /** In the restorer, before the task's credentials are set. */
  BEFORE_CREDS: 2,
  /** In the restorer, every thread created. */
  AFTER_THREADS: 3,
  /** In the restorer, the last thing before ckpt takes over. */
  LAST: 4,
  /** In the forked task, its session and group made (joined), before it
   * forks the children that inherit them; ckpt's fds are there at ckpt's
   * numbers (e.g. to take a controlling terminal children inherit). */
  AFTER_SESSION: 5,
  /** THREAD + i: run by thread i itself (0 the main thread, k + 1 the
   * plan's threads[k]) before its credentials are set: the threads it
   * creates (OP.THREAD) and its seccomp filters, in order. */
  THREAD: 0x100,
  /** In the forked root, after its first stop, in its new namespaces: the
   * mount tree built and moved into (src/mount/restore.ts). */
  MOUNTS: 6,
  /** In the forked root, after ckpt filled the tree and opened the files
   * below it: the mounts' flags set. */
  MOUNTED: 7,
} as const;
/** THREAD: a = [k] creates the plan's threads[k]; a thread no THREAD op
 * names is created by the main thread after its own THREAD ops. STORE:
 * a = [address, n, word…] stores n (at most 5) words at a task address. */
export const OP = { SYSCALL: 1, RELOC: 2, SWAP_FD: 3, UNSWAP_FD: 4, THREAD: 5, STORE: 6 } as const;
export const OP_MAY_FAIL = 1;
const OP_SIZE = 72;

/** Bytes an op points to (placed in the plan's op data; the same `bytes`
 * object is placed once), `plus` bytes into them. */
export interface OpBytes {
  bytes: Uint8Array;
  plus?: number;
}

/** One op. SYSCALL: a = [nr, args…]; an OpBytes argument is passed as a
 * pointer to its bytes. RELOC: a = [where (OpBytes), what (OpBytes)] writes
 * the address of `what` at `where`. SWAP_FD: a = [number, fd] puts fd at
 * number, parking what was there; UNSWAP_FD: a = [number, index of the
 * swap op in the task's ops] puts it back. */
export interface PlanOp {
  op: number;
  phase: number;
  flags?: number;
  a: (bigint | number | OpBytes)[];
  /** For the message if it fails: "registering fd 7 in epoll fd 5". */
  what: string;
}

export interface FdMove {
  src: number;
  dst: number;
  cloexec: boolean;
}
export interface PlanVma {
  start: bigint;
  end: bigint;
  prot: number;
  mapFlags: number;
  fd: number;
  fill: boolean;
  /** Registered with the task's userfaultfd; its pages come later. */
  lazy?: boolean;
  pgoff: bigint;
}
export interface PageFill {
  addr: bigint;
  len: bigint;
  fileOff: bigint;
  /** The run's CRC32C from the image, when ckpt checks it while filling. */
  crc?: number;
  /** Which pages file: 0 the task's own, k the k-th parent images' (those
   * are filled by ckpt, never by the restorer). */
  src?: number;
}
export interface SpecialMove {
  cur: bigint;
  len: bigint;
  new: bigint;
}
export interface PlanSigAction {
  handler: bigint;
  flags: bigint;
  restorer: bigint;
  mask: bigint;
}
export interface PlanChild {
  /** 0: any free pid. */
  pid: number;
  planIndex: number;
  /** CHILD.TASK, ZOMBIE or GHOST. */
  kind: number;
  exitStatus: number;
  exitSignal: number;
  /** CLONE_FILES / CLONE_FS when the child shared its parent's;
   * CLONE_NEWPID for the init of a PID namespace nested in the tree. */
  cloneFlags: number;
  /** CHILD.SETSID | SETPGID | JOIN_PGID | EARLY | PREJOIN. */
  flags: number;
  /** CHILD.JOIN_PGID: the group joined. */
  pgid: number;
  /** -1: forked by the task itself; k: by the zombie or ghost children[k]. */
  forker: number;
  /** A zombie's name. */
  comm: string;
  /** Its pid at every PID namespace level, innermost first (clone3 set_tid);
   * absent: pid alone. */
  tids?: number[];
}
export interface PlanCreds {
  uids: number[];
  gids: number[];
  caps: { eff: bigint; prm: bigint; inh: bigint; bnd: bigint; amb: bigint };
  groups: number[];
  noNewPrivs: boolean;
}
export interface PlanThread {
  tid: number;
  altstack: { sp: bigint; size: bigint; flags: number };
  tidAddress: bigint;
  robust: { head: bigint; len: bigint };
  rseq: { addr: bigint; len: number; sig: number };
  comm: string;
  /** The thread's own credentials. */
  creds: PlanCreds;
  /** As PlanChild's. */
  tids?: number[];
}
export interface PlanSignal {
  /** 0: the process-wide queue; else the thread's own. */
  tid: number;
  signo: number;
  info: Uint8Array;
}
export interface PlanRlimit {
  resource: number;
  cur: bigint;
  max: bigint;
}
export interface PlanITimer {
  intervalSec: bigint;
  intervalUsec: bigint;
  valueSec: bigint;
  valueUsec: bigint;
}
export interface PlanMm {
  startCode: bigint;
  endCode: bigint;
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
  brk: bigint;
  startStack: bigint;
  argStart: bigint;
  argEnd: bigint;
  envStart: bigint;
  envEnd: bigint;
}

export interface Plan {
  flags: number;
  pid: number;
  statusFd: number;
  pagesFd: number;
  exeFd: number;
  cwdFd: number;
  rootFd: number;
  serviceLo: number;
  serviceHi: number;
  taskSize: bigint;
  fds: FdMove[];
  vmas: PlanVma[];
  fills: PageFill[];
  specials: SpecialMove[];
  hints: bigint[];
  sigactions: PlanSigAction[]; // 64 entries, index = signo - 1
  signals: PlanSignal[];
  groups: number[];
  auxv: Uint8Array;
  rlimits: PlanRlimit[];
  altstack: { sp: bigint; size: bigint; flags: number };
  personality: number;
  umask: number;
  pdeathsig: number;
  tidAddress: bigint;
  robust: { head: bigint; len: bigint };
  rseq: { addr: bigint; len: number; sig: number };
  itimers: PlanITimer[];
  mm: PlanMm;
  comm: string;
  uids: number[];
  gids: number[];
  caps: { eff: bigint; prm: bigint; inh: bigint; bnd: bigint; amb?: bigint };
  noNewPrivs?: boolean;
  dumpable: number;
  children: PlanChild[];
  threads: PlanThread[];
  joinPgid: number;
  ops: PlanOp[];
  /** The root: fd numbers (ckpt's, inherited) that the fds ckpt sends over
   * lateSock after the root's first stop replace. */
  lateFds?: number[];
  lateSock?: number;
}

const align8 = (n: number) => (n + 7) & ~7;
const CHILD_SIZE = 64, THREAD_SIZE = 184;

/** Where each section of p's encoding goes, and its whole length. */
function layout(p: Plan) {
  // Sections after the header, each 8-aligned.
  const sizes = {
    fds: p.fds.length * 16,
    vmas: p.vmas.length * 40,
    fills: p.fills.length * 24,
    specials: p.specials.length * 24,
    hints: p.hints.length * 8,
    sigact: 64 * 32,
    siginfo: p.signals.length * 136,
    groups: p.groups.length * 4,
    auxv: p.auxv.length,
    rlimits: p.rlimits.length * 24,
    children: p.children.length * CHILD_SIZE,
    threads: p.threads.length * THREAD_SIZE,
    threadGroups: p.threads.reduce((n, t) => n + t.creds.groups.length * 4, 0),
    ops: p.ops.length * OP_SIZE,
    opData: 0,
    nspids: 0,
    late: (p.lateFds?.length ?? 0) * 4,
  };
  // Every set_tid array, one after another.
  const nspids: number[] = [];
  const place = (tids?: number[]) => {
    if (!tids?.length) return { at: 0, n: 0 };
    const at = nspids.length;
    nspids.push(...tids);
    return { at, n: tids.length };
  };
  const childTids = p.children.map((c) => place(c.tids));
  const threadTids = p.threads.map((t) => place(t.tids));
  sizes.nspids = nspids.length * 4;
  // Op data: every OpBytes once, 8-aligned each.
  const placed = new Map<Uint8Array, number>();
  for (const o of p.ops) {
    for (const v of o.a) {
      if (typeof v !== "object" || placed.has(v.bytes)) continue;
      placed.set(v.bytes, sizes.opData);
      sizes.opData = align8(sizes.opData + v.bytes.length);
    }
  }
  const off: Record<keyof typeof sizes, number> = {} as Record<keyof typeof sizes, number>;
  let cur = HEADER_SIZE;
  for (const k of Object.keys(sizes) as (keyof typeof sizes)[]) {
    off[k] = cur;
    cur = align8(cur + sizes[k]);
  }
  return { sizes, placed, off, length: cur, nspids, childTids, threadTids };
}

/** The length encodePlan(p) will have (a plan of ten thousand ops is
 * not encoded twice to learn it). */
export function encodedPlanLength(p: Plan): number {
  return layout(p).length;
}

export function encodePlan(p: Plan): Uint8Array<ArrayBuffer> {
  const { sizes, placed, off, length: cur, nspids, childTids, threadTids } = layout(p);
  const fds = p.fds.toSorted((a, b) => a.dst - b.dst);
  const buf = new Uint8Array(cur);
  const dv = new DataView(buf.buffer);
  const u64 = (o: number, v: bigint) => dv.setBigUint64(o, BigInt.asUintN(64, v), true);
  const u32 = (o: number, v: number) => dv.setUint32(o, v >>> 0, true);
  const i32 = (o: number, v: number) => dv.setInt32(o, v, true);
  // A safe integer as a u64 (two's complement when negative), without a BigInt.
  const num = (o: number, v: number) => {
    if (!Number.isSafeInteger(v)) return u64(o, BigInt(v));
    const lo = v % 0x1_0000_0000;
    dv.setUint32(o, lo >>> 0, true);
    dv.setUint32(o + 4, Math.floor(v / 0x1_0000_0000) >>> 0, true);
  };

  u64(0, PLAN_MAGIC);
  u32(8, PLAN_VERSION);
  u32(12, p.flags);
  u64(16, BigInt(cur));
  i32(24, p.pid);
  i32(28, p.statusFd);
  i32(32, p.pagesFd);
  i32(36, p.exeFd);
  i32(40, p.cwdFd);
  i32(44, p.rootFd);
  i32(48, p.serviceLo);
  i32(52, p.serviceHi);
  u64(56, p.taskSize);
  // 64, 72: region start/len, filled in natively
  const sec: [keyof typeof sizes, number][] = [
    ["fds", fds.length],
    ["vmas", p.vmas.length],
    ["fills", p.fills.length],
    ["specials", p.specials.length],
    ["hints", p.hints.length],
  ];
  sec.forEach(([k, n], i) => {
    u64(80 + i * 16, BigInt(off[k]));
    u64(88 + i * 16, BigInt(n));
  });
  u64(160, BigInt(off.sigact));
  u64(168, BigInt(off.siginfo));
  u64(176, BigInt(p.signals.length));
  u64(184, BigInt(off.groups));
  u64(192, BigInt(p.groups.length));
  u64(200, BigInt(off.auxv));
  u64(208, BigInt(p.auxv.length));
  u64(216, BigInt(off.rlimits));
  u64(224, BigInt(p.rlimits.length));
  u64(232, p.altstack.sp);
  u64(240, p.altstack.size);
  i32(248, p.altstack.flags);
  u32(252, p.personality);
  u32(256, p.umask);
  i32(260, p.pdeathsig);
  u64(264, p.tidAddress);
  u64(272, p.robust.head);
  u64(280, p.robust.len);
  u64(288, p.rseq.addr);
  u32(296, p.rseq.len);
  u32(300, p.rseq.sig);
  p.itimers.slice(0, 3).forEach((t, i) => {
    const o = 304 + i * 32;
    u64(o, t.intervalSec);
    u64(o + 8, t.intervalUsec);
    u64(o + 16, t.valueSec);
    u64(o + 24, t.valueUsec);
  });
  const mm = p.mm;
  [
    mm.startCode,
    mm.endCode,
    mm.startData,
    mm.endData,
    mm.startBrk,
    mm.brk,
    mm.startStack,
    mm.argStart,
    mm.argEnd,
    mm.envStart,
    mm.envEnd,
  ].forEach((v, i) => u64(400 + i * 8, v));
  buf.set(new TextEncoder().encode(p.comm).subarray(0, 15), 488);
  p.uids.slice(0, 4).forEach((v, i) => u32(504 + i * 4, v));
  p.gids.slice(0, 4).forEach((v, i) => u32(520 + i * 4, v));
  u64(536, p.caps.eff);
  u64(544, p.caps.prm);
  u64(552, p.caps.inh);
  u64(560, p.caps.bnd);
  u32(568, p.dumpable);
  u64(576, BigInt(off.children));
  u64(584, BigInt(p.children.length));
  u64(592, BigInt(off.threads));
  u64(600, BigInt(p.threads.length));
  i32(608, p.joinPgid);
  u64(616, BigInt(off.ops));
  u64(624, BigInt(p.ops.length));
  u64(632, BigInt(off.opData));
  u64(640, BigInt(sizes.opData));
  u64(648, p.caps.amb ?? 0n);
  u32(656, p.noNewPrivs ? 1 : 0);
  u64(664, BigInt(off.nspids));
  u64(672, BigInt(nspids.length));
  u64(680, BigInt(off.late));
  u64(688, BigInt(p.lateFds?.length ?? 0));
  i32(696, p.lateSock ?? -1);
  nspids.forEach((v, i) => i32(off.nspids + i * 4, v));
  (p.lateFds ?? []).forEach((v, i) => i32(off.late + i * 4, v));

  fds.forEach((m, i) => {
    const o = off.fds + i * 16;
    i32(o, m.src);
    i32(o + 4, m.dst);
    u32(o + 8, m.cloexec ? 1 : 0);
  });
  p.vmas.forEach((v, i) => {
    const o = off.vmas + i * 40;
    u64(o, v.start);
    u64(o + 8, v.end);
    u32(o + 16, v.prot);
    u32(o + 20, v.mapFlags);
    i32(o + 24, v.fd);
    u32(o + 28, (v.fill ? VMA_FILL : 0) | (v.lazy ? VMA_LAZY : 0));
    u64(o + 32, v.pgoff);
  });
  p.fills.forEach((f, i) => {
    const o = off.fills + i * 24;
    u64(o, f.addr);
    u64(o + 8, f.len);
    u64(o + 16, f.fileOff);
  });
  p.specials.forEach((s, i) => {
    const o = off.specials + i * 24;
    u64(o, s.cur);
    u64(o + 8, s.len);
    u64(o + 16, s.new);
  });
  p.hints.forEach((h, i) => u64(off.hints + i * 8, h));
  p.sigactions.slice(0, 64).forEach((a, i) => {
    const o = off.sigact + i * 32;
    u64(o, a.handler);
    u64(o + 8, a.flags);
    u64(o + 16, a.restorer);
    u64(o + 24, a.mask);
  });
  p.signals.forEach((s, i) => {
    const o = off.siginfo + i * 136;
    u32(o, s.tid);
    u32(o + 4, s.signo);
    buf.set(s.info.subarray(0, 128), o + 8);
  });
  p.groups.forEach((g, i) => u32(off.groups + i * 4, g));
  buf.set(p.auxv, off.auxv);
  p.rlimits.forEach((l, i) => {
    const o = off.rlimits + i * 24;
    u32(o, l.resource);
    u64(o + 8, l.cur);
    u64(o + 16, l.max);
  });
  p.children.forEach((c, i) => {
    const o = off.children + i * CHILD_SIZE;
    i32(o, c.pid);
    u32(o + 4, c.planIndex);
    u32(o + 8, c.kind);
    i32(o + 12, c.exitStatus);
    u32(o + 16, c.exitSignal);
    u32(o + 20, c.cloneFlags);
    u32(o + 24, c.flags);
    i32(o + 28, c.pgid);
    i32(o + 32, c.forker);
    buf.set(new TextEncoder().encode(c.comm).subarray(0, 15), o + 40);
    u32(o + 56, childTids[i].at);
    u32(o + 60, childTids[i].n);
  });
  let groupsAt = off.threadGroups;
  p.threads.forEach((t, i) => {
    const o = off.threads + i * THREAD_SIZE;
    i32(o, t.tid);
    i32(o + 4, t.altstack.flags);
    u64(o + 8, t.tidAddress);
    u64(o + 16, t.robust.head);
    u64(o + 24, t.robust.len);
    u64(o + 32, t.rseq.addr);
    u32(o + 40, t.rseq.len);
    u32(o + 44, t.rseq.sig);
    u64(o + 48, t.altstack.sp);
    u64(o + 56, t.altstack.size);
    buf.set(new TextEncoder().encode(t.comm).subarray(0, 15), o + 64);
    const c = t.creds;
    c.uids.slice(0, 4).forEach((v, k) => u32(o + 80 + k * 4, v));
    c.gids.slice(0, 4).forEach((v, k) => u32(o + 96 + k * 4, v));
    u64(o + 112, c.caps.eff);
    u64(o + 120, c.caps.prm);
    u64(o + 128, c.caps.inh);
    u64(o + 136, c.caps.bnd);
    u64(o + 144, c.caps.amb);
    u64(o + 152, BigInt(groupsAt));
    u32(o + 160, c.groups.length);
    u32(o + 164, c.noNewPrivs ? 1 : 0);
    c.groups.forEach((g, k) => u32(groupsAt + k * 4, g));
    groupsAt += c.groups.length * 4;
    u32(o + 176, threadTids[i].at);
    u32(o + 180, threadTids[i].n);
  });
  for (const [bytes, o] of placed) buf.set(bytes, off.opData + o);
  p.ops.forEach((op, i) => {
    const o = off.ops + i * OP_SIZE;
    if (op.a.length > 7) throw new Error(`plan op ${op.op} has more than 7 arguments`);
    let mask = 0;
    op.a.forEach((v, k) => {
      if (typeof v === "object") {
        mask |= 1 << k;
        num(o + 16 + k * 8, placed.get(v.bytes)! + (v.plus ?? 0));
      } else if (typeof v === "number") num(o + 16 + k * 8, v);
      else u64(o + 16 + k * 8, BigInt(v));
    });
    u32(o, op.op);
    u32(o + 4, op.phase);
    u32(o + 8, mask);
    u32(o + 12, op.flags ?? 0);
  });
  return buf;
}

/** The tree plan: a small header, the offset of each task's plan, then the
 * plans (task 0 is the root, which ckpt forks itself). */
export function encodeTree(plans: Uint8Array[]): Uint8Array<ArrayBuffer> {
  let cur = align8(TREE_HEADER_SIZE + plans.length * 8);
  const offs = plans.map((pl) => {
    const o = cur;
    cur = align8(cur + pl.length);
    return o;
  });
  const buf = new Uint8Array(cur);
  const dv = new DataView(buf.buffer);
  dv.setBigUint64(0, PLAN_MAGIC, true);
  dv.setUint32(8, PLAN_VERSION, true);
  dv.setUint32(12, plans.length, true);
  dv.setBigUint64(16, BigInt(cur), true);
  dv.setBigUint64(24, BigInt(TREE_HEADER_SIZE), true);
  offs.forEach((o, i) => {
    dv.setBigUint64(TREE_HEADER_SIZE + i * 8, BigInt(o), true);
    buf.set(plans[i], o);
  });
  return buf;
}
