//! The restore plan: one flat little-endian buffer built by TypeScript
//! (src/restore/plan_buffer.ts mirrors this file), copied into the restorer
//! region and read there by the blob. Offsets are relative to the plan start;
//! nothing in it is a pointer, because the blob runs at an address chosen late.

pub const magic: u64 = 0x4e414c5054504b43; // "CKPTPLAN"
pub const version: u32 = 1;

pub const flag_setsid: u32 = 1;
pub const flag_setpgid: u32 = 2;
pub const flag_root: u32 = 4; // the task ckpt forks itself (traced with TRACEME)
pub const flag_join_pgid: u32 = 8; // setpgid(0, join_pgid) once that group exists
pub const flag_external_fill: u32 = 16; // ckpt fills the pages (fill_magic stop)
pub const flag_shared_files: u32 = 32; // fd table shared with the parent, laid out there
pub const flag_lazy: u32 = 64; // register vma_lazy mappings with a userfaultfd (lazy_magic stop)
pub const flag_subreaper: u32 = 128; // PR_SET_CHILD_SUBREAPER before any child is forked
/// The root: make a time namespace for its children before its first stop
/// (ckpt writes its offsets there) and enter it after.
pub const flag_new_time: u32 = 256;
/// The root: make a cgroup namespace after its first stop (ckpt has moved it
/// into the cgroups the namespace is rooted at meanwhile).
pub const flag_new_cgroup: u32 = 512;
/// Leave the supplementary groups as the task was forked with them (a user
/// namespace with setgroups denied: they were set for the root at its fork).
pub const flag_keep_groups: u32 = 1024;
/// The root builds its mount tree after its first stop (phase_mounts), stops
/// with mounts_magic for ckpt to fill it, then runs phase_mounted.
pub const flag_mounts: u32 = 2048;

/// The whole tree: every task's plan, each a self-contained Header + arrays.
pub const TreeHeader = extern struct {
    magic: u64,
    version: u32,
    n_tasks: u32,
    total_len: u64,
    tasks_off: u64, // u64[n_tasks]: offset of each task's Header
};

/// A child a task forks before restoring itself: a task (its plan at
/// plan_index), a zombie (dies as the dumped one had), or a ghost (a helper
/// that sets up a session or group, forks its own entries and exits; its
/// forker reaps it). forker -1: forked by the task whose plan lists it; k:
/// by the zombie or ghost children[k] of the same list, which sets its
/// session and group (flags, pgid) first. pid 0: any free pid.
/// clone_flags: CLONE_FILES (0x400) and/or CLONE_FS (0x200) when the child
/// shared its parent's fd table / fs info. A CLONE_FILES child is forked
/// after the parent laid out the shared table, and lays out none itself.
pub const Child = extern struct {
    pid: i32,
    plan_index: u32,
    kind: u32,
    exit_status: i32,
    exit_signal: u32,
    clone_flags: u32,
    flags: u32,
    pgid: i32,
    forker: i32,
    _pad: u32 = 0,
    comm: [16]u8,
    /// The child's pid at every PID namespace level, innermost first (clone3
    /// set_tid), in the plan's nspids array; n_tids 0: pid alone.
    tids_at: u32,
    n_tids: u32,
};

pub const child_task: u32 = 0;
pub const child_zombie: u32 = 1;
pub const child_ghost: u32 = 2;
/// What a zombie or ghost does to itself, and when its forker forks it.
pub const child_setsid: u32 = 1;
pub const child_setpgid: u32 = 2;
pub const child_join_pgid: u32 = 4;
pub const child_early: u32 = 8; // before the forker's setsid
pub const child_prejoin: u32 = 16; // before the forker joins its group

pub const CLONE_FS: u32 = 0x200;
pub const CLONE_FILES: u32 = 0x400;
pub const CLONE_NEWPID: u32 = 0x20000000;

/// A thread's credentials (the kernel keeps them per thread).
pub const Creds = extern struct {
    uids: [4]u32,
    gids: [4]u32,
    cap_eff: u64,
    cap_prm: u64,
    cap_inh: u64,
    cap_bnd: u64,
    cap_amb: u64,
    groups_off: u64, // u32[n_groups] in the plan
    n_groups: u32,
    no_new_privs: u32,
};

/// Per-thread state of the threads other than the main one.
pub const Thread = extern struct {
    tid: i32,
    altstack_flags: i32,
    tid_address: u64,
    robust_head: u64,
    robust_len: u64,
    rseq_addr: u64,
    rseq_len: u32,
    rseq_sig: u32,
    altstack_sp: u64,
    altstack_size: u64,
    comm: [16]u8,
    creds: Creds,
    /// 0 not created, 1 created, 2 its credentials set (futex word).
    state: u32,
    _pad: u32 = 0,
    tids_at: u32, // the tid at every PID namespace level, as Child's
    n_tids: u32,
};

pub const thread_stack: u64 = 64 << 10;

/// Stages, reported back with errno when a step fails.
pub const Stage = enum(u32) {
    none = 0,
    child_setup = 1,
    session = 2,
    fds = 3,
    cwd_root = 4,
    region = 5,
    vdso = 6,
    unmap = 7,
    map_vma = 8,
    fill_pages = 9,
    protect = 10,
    mm_map = 11,
    signals = 12,
    timers = 13,
    thread_state = 14,
    misc = 15,
    rlimits = 16,
    creds = 17,
    pending = 18,
    children = 19,
    threads = 20,
    lazy = 21,
    ops = 22,
    namespaces = 23,
};

/// Written to the status pipe when a stage fails, then the child exits.
pub const Failure = extern struct { stage: u32, errno: i32, detail: u64, pid: i32, _pad: u32 = 0 };

/// The blob stops with int3 and this in rax when the task is ready for the
/// final touches (registers, FPU, signal mask) done over ptrace.
pub const ready_magic: u64 = 0x52454144595f434b;

/// With flag_external_fill the blob stops with int3 and this in rax once
/// every mapping exists, so ckpt can copy the pages in from several threads.
pub const fill_magic: u64 = 0x46494c4c5f5f434b;

/// With flag_lazy the blob stops with int3, this in rax and its userfaultfd
/// in rdi once the vma_lazy mappings are registered; ckpt takes a copy of the
/// fd and serves their pages from then on, and the blob closes its own.
pub const lazy_magic: u64 = 0x4c415a595f5f434b;

/// With flag_mounts the forked root stops with int3 and this in rax once its
/// mount tree is built: ckpt fills its tmpfs mounts and opens the tree's
/// files below it meanwhile.
pub const mounts_magic: u64 = 0x4d4f554e54535f4b;

pub const FdMove = extern struct { src: i32, dst: i32, cloexec: u32, _pad: u32 = 0 };

pub const vma_fill: u32 = 1; // pages will be read into it: map writable first
pub const vma_lazy: u32 = 2; // anonymous private, its pages come later through the userfaultfd

pub const Vma = extern struct {
    start: u64,
    end: u64,
    prot: u32,
    map_flags: u32,
    fd: i32,
    flags: u32,
    pgoff: u64,
};

pub const PageFill = extern struct { addr: u64, len: u64, file_off: u64 };

pub const SpecialMove = extern struct { cur: u64, len: u64, new: u64 };

pub const SigAction = extern struct { handler: u64, flags: u64, restorer: u64, mask: u64 };

/// tid 0: the process-wide queue; otherwise that thread's own queue.
pub const QueuedSig = extern struct { tid: u32, signo: u32, info: [128]u8 };

pub const Rlimit = extern struct { resource: u32, _pad: u32 = 0, cur: u64, max: u64 };

pub const ITimer = extern struct { interval_sec: i64, interval_usec: i64, value_sec: i64, value_usec: i64 };

pub const MmMap = extern struct {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
};

pub const Header = extern struct {
    magic: u64,
    version: u32,
    flags: u32,
    total_len: u64,
    pid: i32,
    status_fd: i32,
    pages_fd: i32,
    exe_fd: i32,
    cwd_fd: i32,
    root_fd: i32,
    service_lo: i32, // every fd in [service_lo, service_hi] is ckpt's own
    service_hi: i32,
    task_size: u64,
    region_start: u64, // filled in by the child before the jump
    region_len: u64,

    fds_off: u64,
    n_fds: u64,
    vmas_off: u64,
    n_vmas: u64,
    fills_off: u64,
    n_fills: u64,
    specials_off: u64,
    n_specials: u64,
    hints_off: u64,
    n_hints: u64,
    sigact_off: u64, // 64 SigAction, index = signo - 1
    siginfo_off: u64,
    n_siginfo: u64,
    groups_off: u64,
    n_groups: u64,
    auxv_off: u64,
    auxv_len: u64,
    rlimits_off: u64,
    n_rlimits: u64,

    altstack_sp: u64,
    altstack_size: u64,
    altstack_flags: i32,
    personality: u32,
    umask: u32,
    pdeathsig: i32,
    tid_address: u64,
    robust_head: u64,
    robust_len: u64,
    rseq_addr: u64,
    rseq_len: u32,
    rseq_sig: u32,
    itimers: [3]ITimer,
    mm: MmMap,
    comm: [16]u8,
    uids: [4]u32,
    gids: [4]u32,
    cap_eff: u64,
    cap_prm: u64,
    cap_inh: u64,
    cap_bnd: u64,
    dumpable: u32,
    _pad1: u32,
    children_off: u64,
    n_children: u64,
    threads_off: u64,
    n_threads: u64,
    join_pgid: i32,
    _pad2: u32,
    ops_off: u64, // Op[n_ops], run in plan order at their phase
    n_ops: u64,
    op_data_off: u64, // bytes the ops' pointer arguments point into
    op_data_len: u64,
    cap_amb: u64,
    no_new_privs: u32,
    _pad3: u32,
    nspids_off: u64, // i32[n_nspids]: the set_tid arrays of children and threads
    n_nspids: u64,
    late_off: u64, // i32[n_late]: where the fds ckpt sends once the root's namespaces exist go
    n_late: u64,
    late_sock: i32, // the root receives them on this socket after its first stop
    _pad4: u32,
};

/// Operations a task runs on itself at a given point of its restore: what
/// only the task can do (register epoll targets by their fd numbers, take
/// POSIX locks, create POSIX timers with their ids, install seccomp filters)
/// and needs no code of its own in the restorer beyond a system call.
pub const Op = extern struct {
    op: u32,
    phase: u32,
    /// Bit i set: argument a[i] is an offset into the op data, passed as a
    /// pointer (the plan moves, so no absolute address is ever written).
    ptr_mask: u32,
    flags: u32,
    a: [7]u64,
};

/// In the forked task, fds at their numbers, before the restorer runs.
pub const phase_after_fds: u32 = 0;
/// In the restorer, the memory and mm fields in place.
pub const phase_after_memory: u32 = 1;
/// In the restorer, before the task's credentials are set.
pub const phase_before_creds: u32 = 2;
/// In the restorer, every thread created.
pub const phase_after_threads: u32 = 3;
/// In the restorer, last thing before handing over to ckpt.
pub const phase_last: u32 = 4;
/// In the forked task once its session and process group are made (after
/// it joined a group, for one that joins), before it forks the children that
/// inherit them: ckpt's fds are still there at ckpt's numbers. For what a
/// child must inherit, such as the controlling terminal.
pub const phase_after_session: u32 = 5;
/// phase_thread + i: run by thread i itself (0 main, k + 1 threads[k])
/// before its credentials: the threads it creates and its seccomp filters.
pub const phase_thread: u32 = 0x100;
/// In the forked root after its first stop: the mount tree built under a
/// staging directory and moved into with pivot_root.
pub const phase_mounts: u32 = 6;
/// In the forked root, once ckpt filled the tree: the mounts' flags.
pub const phase_mounted: u32 = 7;

/// a[0] = syscall number, a[1..6] = its arguments.
pub const op_syscall: u32 = 1;
/// Writes the address of op data offset a[1] at op data offset a[0] (a
/// pointer inside a structure the kernel reads, e.g. sock_fprog.filter).
pub const op_reloc: u32 = 2;
/// Puts fd a[1] at number a[0] for the ops that follow, parking whatever
/// a[0] held (where it went is kept in this op's a[2], a[3]); op_unswap_fd
/// with a[0] the same number and a[1] the swap's index puts that back, or
/// closes a[0] if it held nothing.
pub const op_swap_fd: u32 = 3;
pub const op_unswap_fd: u32 = 4;
/// Creates threads[a[0]] (in the restorer only): a thread then inherits the
/// seccomp filters its creator has at that moment.
pub const op_thread: u32 = 5;
/// Stores a[1] (at most 5) words a[2..] at the task's address a[0] (the
/// restorer writes it, so a page still to come with --lazy-pages is served).
pub const op_store: u32 = 6;

/// An op whose call fails is ignored instead of failing the restore.
pub const op_flag_may_fail: u32 = 1;
