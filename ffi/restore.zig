//! Restore, native half: fork the root task with its exact PID (clone3 +
//! set_tid); every task forks its own children the same way, then — a fork of
//! a multi-threaded runtime, so raw syscalls only — rebuilds its session, fds,
//! cwd and root, copies the restorer blob and its plan to a free region and
//! jumps there. ckpt traces the whole tree (TRACEME on the root, or a seize
//! of a sibling root; fork/clone tracing inherited below) and sets the final
//! registers over ptrace.
const sys = @import("sys.zig");
const abi = @import("restorer/abi.zig");
const ops = @import("restorer/ops.zig");
const ns = @import("ns.zig");
const NR = sys.NR;

const blob = @embedFile("restorer_blob");
const stack_size: usize = 256 << 10;
const page: usize = 4096;

export fn ck_restorer_size() u64 {
    return blob.len;
}

/// Bytes the restorer region needs for a task plan of plan_len bytes with
/// n_threads threads besides the main one.
export fn ck_region_size(plan_len: u64, n_threads: u64) u64 {
    return alignUp(blob.len, page) + alignUp(plan_len, page) + stack_size + n_threads * abi.thread_stack;
}

fn alignUp(v: u64, a: u64) u64 {
    return (v + a - 1) & ~(a - 1);
}

const CloneArgs = sys.CloneArgs;

fn taskPlan(tree: *abi.TreeHeader, i: u32) *abi.Header {
    const offs: [*]const u64 = @ptrFromInt(@intFromPtr(tree) + tree.tasks_off);
    return @ptrFromInt(@intFromPtr(tree) + offs[i]);
}

/// tids: the pid at every PID namespace level, innermost first (empty: pid
/// alone, at this level).
fn forkWithPid(pid: i32, tids: []const i32, exit_signal: u64, flags: u64) usize {
    var want: i32 = pid;
    var args = CloneArgs{ .flags = flags, .exit_signal = exit_signal };
    if (tids.len > 0) {
        args.set_tid = sys.ptr(tids.ptr);
        args.set_tid_size = tids.len;
    } else if (pid > 0) {
        args.set_tid = sys.ptr(&want);
        args.set_tid_size = 1;
    }
    return sys.syscall2(NR.clone3, sys.ptr(&args), @sizeOf(CloneArgs));
}

fn nspids(p: *abi.Header, at: u32, n: u32) []const i32 {
    const all: [*]const i32 = @ptrFromInt(@intFromPtr(p) + p.nspids_off);
    if (n == 0 or @as(u64, at) + n > p.n_nspids) return all[0..0];
    return all[at .. at + n];
}

/// Forks the root task of the tree plan. Returns its pid, or -errno (EEXIST:
/// the pid is taken). The child never returns. status_fd is the write end of
/// a pipe where any task reports a failure. rseq_offset/rseq_size: glibc's
/// __rseq_offset/__rseq_size for the calling thread (size 0: none), whose
/// registration the root inherits and must drop before its memory goes.
/// clone_flags: the namespaces (CLONE_NEW*) the root is made in; set_tid its
/// pid at each PID namespace level, innermost first (n 0: its pid alone).
/// n_groups >= 0: the root is forked with these supplementary groups (set on
/// the calling thread alone for the fork, then put back): in a user namespace
/// with setgroups denied it can never set them itself.
export fn ck_restore_spawn(tree_buf: [*]u8, tree_len: usize, status_fd: i32, rseq_offset: i64, rseq_size: u32, clone_flags: u64, set_tid: [*]const i32, n_set_tid: u32, groups: [*]const u32, n_groups: i32) i64 {
    _ = tree_len;
    const tree: *abi.TreeHeader = @ptrCast(@alignCast(tree_buf));
    const root = taskPlan(tree, 0);
    const rc = forkRoot(root, sys.SIGCHLD, clone_flags, set_tid[0..n_set_tid], groups, n_groups);
    if (sys.isErr(rc)) return sys.signed(rc);
    if (rc != 0) return @intCast(rc);
    dropInheritedRseq(status_fd, root.pid, rseq_offset, rseq_size);
    child(tree, 0, status_fd, false);
}

/// The root's fork, with the groups it must have set on this thread for it.
fn forkRoot(root: *abi.Header, exit_signal: u64, flags: u64, tids: []const i32, groups: [*]const u32, n_groups: i32) usize {
    var saved: [1024]u32 = undefined;
    var n_saved: usize = 0;
    if (n_groups >= 0) {
        const got = sys.syscall2(NR.getgroups, saved.len, sys.ptr(&saved));
        if (sys.isErr(got)) return got;
        n_saved = got;
        const set = sys.syscall2(NR.setgroups, @intCast(n_groups), sys.ptr(groups));
        if (sys.isErr(set)) return set;
    }
    const rc = forkWithPid(root.pid, tids, exit_signal, flags);
    if (rc != 0 and n_groups >= 0) _ = sys.syscall2(NR.setgroups, n_saved, sys.ptr(&saved));
    return rc;
}

const CLONE_PARENT: u64 = 0x8000;

/// Set in the root of a sibling restore (CRIU's rst_sibling, for a caller
/// such as runc that must be the restored root's parent): ckpt seizes it
/// from outside instead of it asking its parent to trace it.
var root_seized = false;

/// ck_restore_spawn, but the root is forked with CLONE_PARENT, so it becomes
/// a child of ckpt's parent. It waits on sync_rd until ckpt has seized it
/// (PTRACE_SEIZE with fork/clone tracing, so its children are traced as in
/// the usual restore), filled its namespaces, and wrote one byte; if ckpt is
/// gone first (EOF) it exits. sync_wr is ckpt's end, closed here so that EOF
/// can come. A time namespace of its own is made before the wait: ckpt sets
/// its offsets meanwhile.
export fn ck_restore_spawn_sibling(tree_buf: [*]u8, tree_len: usize, status_fd: i32, rseq_offset: i64, rseq_size: u32, sync_rd: i32, sync_wr: i32, clone_flags: u64, set_tid: [*]const i32, n_set_tid: u32, groups: [*]const u32, n_groups: i32) i64 {
    _ = tree_len;
    const tree: *abi.TreeHeader = @ptrCast(@alignCast(tree_buf));
    const root = taskPlan(tree, 0);
    // With CLONE_PARENT the exit signal is ckpt's own (the kernel ignores ours).
    const rc = forkRoot(root, 0, CLONE_PARENT | clone_flags, set_tid[0..n_set_tid], groups, n_groups);
    if (sys.isErr(rc)) return sys.signed(rc);
    if (rc != 0) return @intCast(rc);
    _ = sys.syscall1(NR.close, sys.int(sync_wr));
    if (root.flags & abi.flag_new_time != 0) {
        check(status_fd, root.pid, .namespaces, sys.syscall1(NR.unshare, CLONE_NEWTIME), 1);
    }
    var go: u8 = 0;
    if (sys.syscall3(NR.read, sys.int(sync_rd), sys.ptr(&go), 1) != 1) {
        while (true) _ = sys.syscall1(NR.exit_group, 1);
    }
    _ = sys.syscall1(NR.close, sys.int(sync_rd));
    root_seized = true;
    dropInheritedRseq(status_fd, root.pid, rseq_offset, rseq_size);
    child(tree, 0, status_fd, false);
}

fn fail(fd: i32, pid: i32, stage: abi.Stage, rc: usize, detail: u64) noreturn {
    const f = abi.Failure{ .stage = @intFromEnum(stage), .errno = @intCast(-sys.signed(rc)), .detail = detail, .pid = pid };
    _ = sys.syscall3(NR.write, sys.int(fd), sys.ptr(&f), @sizeOf(abi.Failure));
    while (true) _ = sys.syscall1(NR.exit_group, 100 + @as(usize, @intFromEnum(stage)));
}

fn check(fd: i32, pid: i32, stage: abi.Stage, rc: usize, detail: u64) void {
    if (sys.isErr(rc)) fail(fd, pid, stage, rc, detail);
}

const F_DUPFD = 0;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
const PR_SET_PDEATHSIG = 1;
const RSEQ_FLAG_UNREGISTER = 1;
const RSEQ_SIG_GLIBC_X86 = 0x53053053;
const ARCH_GET_FS = 0x1003;

fn dropInheritedRseq(status_fd: i32, pid: i32, offset: i64, size: u32) void {
    if (size == 0) return;
    var fs: u64 = 0;
    check(status_fd, pid, .child_setup, sys.syscall2(NR.arch_prctl, ARCH_GET_FS, sys.ptr(&fs)), 3);
    const area: u64 = @bitCast(@as(i64, @bitCast(fs)) + offset);
    // glibc registers 32 bytes (older) or its feature size (newer).
    var rc = sys.syscall4(NR.rseq, area, 32, RSEQ_FLAG_UNREGISTER, RSEQ_SIG_GLIBC_X86);
    if (sys.isErr(rc) and size != 32) rc = sys.syscall4(NR.rseq, area, size, RSEQ_FLAG_UNREGISTER, RSEQ_SIG_GLIBC_X86);
    check(status_fd, pid, .child_setup, rc, 4);
}

/// A zombie child: dies at once the way the dumped one had died.
fn becomeZombie(status: i32) noreturn {
    const st: u32 = @bitCast(status);
    const sig = st & 0x7f;
    if (sig != 0 and sig != 0x7f) {
        const no_core = [2]u64{ 0, 0 };
        _ = sys.syscall4(NR.prlimit64, 0, 4, sys.ptr(&no_core), 0); // RLIMIT_CORE
        const dfl = [4]u64{ 0, 0, 0, 0 };
        _ = sys.syscall4(NR.rt_sigaction, sig, sys.ptr(&dfl), 0, 8);
        const mask: u64 = @as(u64, 1) << @intCast(sig - 1);
        _ = sys.syscall4(NR.rt_sigprocmask, 1, sys.ptr(&mask), 0, 8); // SIG_UNBLOCK
        _ = sys.syscall2(NR.kill, sys.syscall0(NR.getpid), sig);
    }
    while (true) _ = sys.syscall1(NR.exit_group, (st >> 8) & 0xff);
}

const PR_SET_NAME = 15;
const PR_SET_CHILD_SUBREAPER = 36;

/// setpgid(0, pgid) once that group exists: it is made by another task of
/// the tree (a sibling's start-up, a ghost) running meanwhile. Up to ~5 s.
fn joinGroup(pgid: i32) usize {
    var tries: usize = 0;
    while (true) : (tries += 1) {
        const rc = sys.syscall2(NR.setpgid, 0, sys.int(pgid));
        if (!sys.isErr(rc) or tries > 50000) return rc;
        if (tries < 1000) {
            _ = sys.syscall0(NR.sched_yield);
        } else {
            const ts = [2]u64{ 0, 100_000 };
            _ = sys.syscall2(NR.nanosleep, sys.ptr(&ts), 0);
        }
    }
}

/// The moments of a forker's own setup at which it forks children.
const When = enum { early, prejoin, normal, shared_files };

fn whenOf(k: *const abi.Child) When {
    if (k.clone_flags & abi.CLONE_FILES != 0) return .shared_files;
    if (k.flags & abi.child_early != 0) return .early;
    if (k.flags & abi.child_prejoin != 0) return .prejoin;
    return .normal;
}

/// A zombie or ghost, kids[self] of a task's list: its session and group,
/// the entries it forks itself, then its death (a zombie's, as dumped) or
/// exit (a ghost's, reaped by its forker).
fn ghostly(tree: *abi.TreeHeader, kids: []abi.Child, self: usize, status_fd: i32) noreturn {
    const k = &kids[self];
    const pid: i32 = @intCast(sys.syscall0(NR.getpid));
    _ = sys.syscall2(NR.prctl, PR_SET_NAME, sys.ptr(&k.comm));
    if (k.flags & abi.child_setsid != 0) check(status_fd, pid, .session, sys.syscall0(NR.setsid), 1);
    if (k.flags & abi.child_setpgid != 0) check(status_fd, pid, .session, sys.syscall2(NR.setpgid, 0, 0), 2);
    const me: i32 = @intCast(self);
    forkChildren(tree, kids, me, .prejoin, status_fd, pid);
    if (k.flags & abi.child_join_pgid != 0) check(status_fd, pid, .session, joinGroup(k.pgid), @intCast(k.pgid));
    forkChildren(tree, kids, me, .normal, status_fd, pid);
    reapGhosts(kids, me, status_fd, pid);
    if (k.kind == abi.child_zombie) becomeZombie(k.exit_status);
    while (true) _ = sys.syscall1(NR.exit_group, 0);
}

/// Ghosts forked by `forker` exit once they have forked theirs: reaped
/// here, so no child the dump did not see is left behind.
fn reapGhosts(kids: []abi.Child, forker: i32, status_fd: i32, pid: i32) void {
    for (kids) |*k| {
        if (k.forker != forker or k.kind != abi.child_ghost) continue;
        var st: i32 = 0;
        while (true) {
            const rc = sys.syscall4(NR.wait4, sys.int(k.pid), sys.ptr(&st), sys.WALL, 0);
            if (sys.signed(rc) == -4) continue;
            check(status_fd, pid, .children, rc, @intCast(k.pid));
            break;
        }
    }
}

/// The plan whose children list forkChildren walks: the forked task's own
/// (a ghost or zombie forking entries of its parent's list has its parent's,
/// inherited with the rest of its memory). Their set_tid arrays are in it.
var plan_of_kids: *abi.Header = undefined;

fn child(tree: *abi.TreeHeader, index: u32, status_fd0: i32, by_ghost: bool) noreturn {
    const p = taskPlan(tree, index);
    plan_of_kids = p;
    const pid = p.pid;
    var status_fd = status_fd0;
    const all: u64 = ~@as(u64, 0);
    _ = sys.syscall4(NR.rt_sigprocmask, 2, sys.ptr(&all), 0, 8); // SIG_SETMASK
    // A seized root's parent is the caller, not ckpt: PTRACE_O_EXITKILL ties
    // it to ckpt instead. A parent-death signal would also fire when a ghost
    // that forked a task exits.
    const seized = root_seized and p.flags & abi.flag_root != 0;
    if (!seized and !by_ghost) check(status_fd, pid, .child_setup, sys.syscall2(NR.prctl, PR_SET_PDEATHSIG, sys.SIGKILL), 1);
    // A seized root made its time namespace before it waited to be seized,
    // and ckpt filled its namespaces before it let it go.
    if (seized) enterNamespaces(p, status_fd);
    if (p.flags & abi.flag_root != 0 and !seized) {
        // Stop once so ckpt can set fork/clone tracing before any child
        // exists, and fill the namespaces the root was made in.
        check(status_fd, pid, .child_setup, sys.syscall4(NR.ptrace, sys.PTRACE.TRACEME, 0, 0, 0), 2);
        if (p.flags & abi.flag_new_time != 0) {
            check(status_fd, pid, .namespaces, sys.syscall1(NR.unshare, CLONE_NEWTIME), 1);
        }
        // By its own pid: in a new PID namespace it is 1 there.
        _ = sys.syscall2(NR.kill, sys.syscall0(NR.getpid), sys.SIGSTOP);
        enterNamespaces(p, status_fd);
    }
    // Before any child: orphans of its children's ghosts come back to it.
    if (p.flags & abi.flag_subreaper != 0) check(status_fd, pid, .session, sys.syscall2(NR.prctl, PR_SET_CHILD_SUBREAPER, 1), 3);

    // Children first, while every fd ckpt prepared is still here to inherit
    // — except those sharing this task's fd table, forked once it is final —
    // each at the moment of this task's own session and group setup whose
    // session and group it is to be born into.
    const kids: [*]abi.Child = @ptrFromInt(@intFromPtr(p) + p.children_off);
    const list = kids[0..@intCast(p.n_children)];
    forkChildren(tree, list, -1, .early, status_fd, pid);
    if (p.flags & abi.flag_setsid != 0) check(status_fd, pid, .session, sys.syscall0(NR.setsid), 1);
    if (p.flags & abi.flag_setpgid != 0) check(status_fd, pid, .session, sys.syscall2(NR.setpgid, 0, 0), 2);
    forkChildren(tree, list, -1, .prejoin, status_fd, pid);
    if (p.flags & abi.flag_join_pgid != 0) check(status_fd, pid, .session, joinGroup(p.join_pgid), @intCast(p.join_pgid));
    afterSession(p, status_fd);
    forkChildren(tree, list, -1, .normal, status_fd, pid);
    reapGhosts(list, -1, status_fd, pid);

    if (p.flags & abi.flag_shared_files == 0) status_fd = layOutFds(p, status_fd);
    status_fd = p.status_fd;
    if (ops.run(sys, p, abi.phase_after_fds)) |f| fail(status_fd, pid, .ops, f.rc, f.index);

    if (p.root_fd >= 0) {
        check(status_fd, pid, .cwd_root, sys.syscall1(NR.fchdir, sys.int(p.root_fd)), 1);
        check(status_fd, pid, .cwd_root, sys.syscall1(NR.chroot, sys.ptr(".")), 2);
    }
    if (p.cwd_fd >= 0) check(status_fd, pid, .cwd_root, sys.syscall1(NR.fchdir, sys.int(p.cwd_fd)), 3);
    forkChildren(tree, list, -1, .shared_files, status_fd, pid);
    jumpToRestorer(p, status_fd);
}

fn afterSession(p: *abi.Header, status_fd: i32) void {
    if (ops.run(sys, p, abi.phase_after_session)) |f| fail(status_fd, p.pid, .ops, f.rc, f.index);
}


const CLONE_NEWTIME = 0x80;
const CLONE_NEWCGROUP = 0x02000000;

/// After the root's first stop: ckpt has written the time namespace's
/// offsets, moved the root into the cgroups its cgroup namespace is rooted
/// at, and sent the fds it could only open inside the new namespaces.
fn enterNamespaces(p: *abi.Header, status_fd: i32) void {
    const pid = p.pid;
    if (p.flags & abi.flag_new_time != 0) {
        const fd = sys.syscall4(NR.openat, sys.int(@as(i32, -100)), sys.ptr("/proc/self/ns/time_for_children"), sys.O_RDONLY | sys.O_CLOEXEC, 0);
        check(status_fd, pid, .namespaces, fd, 2);
        check(status_fd, pid, .namespaces, sys.syscall2(NR.setns, fd, CLONE_NEWTIME), 3);
        _ = sys.syscall1(NR.close, fd);
    }
    if (p.flags & abi.flag_new_cgroup != 0) {
        check(status_fd, pid, .namespaces, sys.syscall1(NR.unshare, CLONE_NEWCGROUP), 4);
    }
    if (p.flags & abi.flag_mounts != 0) {
        // The mount tree, in the namespaces the mounts belong to (proc of the
        // new PID namespace, sysfs of the new network namespace...); ckpt
        // fills it and opens the tree's files while it waits at the int3.
        if (ops.run(sys, p, abi.phase_mounts)) |f| fail(status_fd, pid, .ops, f.rc, f.index);
        asm volatile ("int3"
            :
            : [m] "{rax}" (abi.mounts_magic),
            : .{ .memory = true });
        if (ops.run(sys, p, abi.phase_mounted)) |f| fail(status_fd, pid, .ops, f.rc, f.index);
    }
    if (p.n_late > 0) {
        const at: [*]const i32 = @ptrFromInt(@intFromPtr(p) + p.late_off);
        check(status_fd, pid, .namespaces, ns.receiveFds(p.late_sock, at[0..@intCast(p.n_late)]), 5);
    }
}

/// Forks the entries of `kids` that `forker` forks at moment `when`. A
/// ghost with no pid of its own gets the one the kernel gives, noted in its
/// entry (this process's copy of the plan) for the reaping.
fn forkChildren(tree: *abi.TreeHeader, kids: []abi.Child, forker: i32, when: When, status_fd: i32, pid: i32) void {
    const p = plan_of_kids;
    for (kids, 0..) |*k, i| {
        if (k.forker != forker or whenOf(k) != when) continue;
        const rc = forkWithPid(k.pid, nspids(p, k.tids_at, k.n_tids), k.exit_signal, k.clone_flags);
        check(status_fd, pid, .children, rc, @intCast(k.pid));
        if (rc == 0) {
            if (k.kind != abi.child_task) ghostly(tree, kids, i, status_fd);
            child(tree, k.plan_index, status_fd, forker >= 0);
        }
        if (k.pid == 0) k.pid = @intCast(rc);
    }
}

/// Parks every source above all numbers in play, places them, then closes
/// everything that is neither a destination nor the status fd (moves come
/// sorted by dst). Returns where the status fd now is (p.status_fd).
fn layOutFds(p: *abi.Header, status_fd0: i32) i32 {
    const pid = p.pid;
    var status_fd = status_fd0;
    const moves: [*]abi.FdMove = @ptrFromInt(@intFromPtr(p) + p.fds_off);
    const n: usize = @intCast(p.n_fds);
    // Every source goes straight to its number (a parallel move: a move
    // waits while its number is still a pending move's source; a cycle is
    // broken by moving one source above every number), and a source is
    // closed once no move needs it. So the task never holds much more than
    // its own fds: parking them all first would need twice as many, more
    // than the fd limit allows for a task with tens of thousands.
    var top: i32 = @max(status_fd, p.status_fd);
    var max_dst: i32 = p.status_fd;
    for (moves[0..n]) |m| {
        top = @max(top, @max(m.src, m.dst));
        max_dst = @max(max_dst, m.dst);
    }
    const moved_status = sys.syscall3(NR.fcntl, sys.int(status_fd), F_DUPFD, sys.int(max_dst + 1));
    check(status_fd, pid, .fds, moved_status, 0);
    status_fd = @intCast(moved_status);
    const slots: usize = @as(usize, @intCast(@max(top, status_fd))) + n + 64;
    const mem = sys.syscall6(NR.mmap, 0, slots * 4, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_PRIVATE | sys.MAP_ANONYMOUS, sys.int(@as(i32, -1)), 0);
    check(status_fd, pid, .fds, mem, 1);
    // Pending uses of each number as a source; `placed`: a move's number.
    const uses: [*]u32 = @ptrFromInt(mem);
    const placed: u32 = 1 << 31;
    for (moves[0..n]) |m| uses[@intCast(m.src)] += 1;
    var left = n;
    while (left > 0) {
        var progress = false;
        for (moves[0..n]) |*m| {
            if (m.src < 0) continue;
            const src: usize = @intCast(m.src);
            const dst: usize = @intCast(m.dst);
            if (dst != src and uses[dst] & ~placed != 0) continue;
            if (dst == src) {
                const fl: usize = if (m.cloexec != 0) FD_CLOEXEC else 0;
                check(status_fd, pid, .fds, sys.syscall3(NR.fcntl, src, F_SETFD, fl), @intCast(m.dst));
            } else {
                const flags: usize = if (m.cloexec != 0) sys.O_CLOEXEC else 0;
                check(status_fd, pid, .fds, sys.syscall3(NR.dup3, src, dst, flags), @intCast(m.dst));
            }
            uses[dst] |= placed;
            uses[src] -= 1;
            if (uses[src] == 0) _ = sys.syscall1(NR.close, src);
            m.src = -1;
            left -= 1;
            progress = true;
        }
        if (progress) continue;
        for (moves[0..n]) |*m| {
            if (m.src < 0) continue;
            const old: usize = @intCast(m.src);
            const t = sys.syscall3(NR.fcntl, old, F_DUPFD, sys.int(max_dst + 1));
            check(status_fd, pid, .fds, t, @intCast(m.src));
            if (t >= slots) fail(status_fd, pid, .fds, sys.int(@as(isize, -24)), @intCast(t));
            for (moves[0..n]) |*o| {
                if (o.src != m.src or o == m) continue;
                o.src = @intCast(t);
                uses[t] += 1;
                uses[old] -= 1;
            }
            m.src = @intCast(t);
            uses[t] += 1;
            uses[old] -= 1;
            if (uses[old] == 0) _ = sys.syscall1(NR.close, old);
            break;
        }
    }
    _ = sys.syscall2(NR.munmap, mem, slots * 4);
    check(status_fd, pid, .fds, sys.syscall3(NR.dup3, sys.int(status_fd), sys.int(p.status_fd), 0), 1000);
    status_fd = p.status_fd;
    var next: i32 = 0;
    var status_kept = false;
    for (moves[0..n]) |m| {
        if (!status_kept and status_fd < m.dst) {
            closeGap(next, status_fd);
            next = status_fd + 1;
            status_kept = true;
        }
        closeGap(next, m.dst);
        next = m.dst + 1;
    }
    if (!status_kept) {
        closeGap(next, status_fd);
        next = status_fd + 1;
    }
    _ = sys.syscall3(NR.close_range, sys.int(next), 0xffffffff, 0);
    return status_fd;
}

/// Closes [from, to) if not empty.
fn closeGap(from: i32, to: i32) void {
    if (to > from) _ = sys.syscall3(NR.close_range, sys.int(from), sys.int(to - 1), 0);
}

fn jumpToRestorer(p: *abi.Header, status_fd: i32) noreturn {
    const pid = p.pid;

    // The region: blob, plan copy, stacks — at the first free hint.
    const plan_len: usize = @intCast(p.total_len);
    const region_len = ck_region_size(plan_len, p.n_threads);
    const hints: [*]const u64 = @ptrFromInt(@intFromPtr(p) + p.hints_off);
    var region: usize = 0;
    var i: usize = 0;
    while (i < p.n_hints) : (i += 1) {
        const rc = sys.syscall6(NR.mmap, hints[i], region_len, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_PRIVATE | sys.MAP_ANONYMOUS | sys.MAP_FIXED_NOREPLACE, sys.int(@as(i32, -1)), 0);
        if (!sys.isErr(rc) and rc == hints[i]) {
            region = rc;
            break;
        }
    }
    if (region == 0) fail(status_fd, pid, .region, sys.int(@as(isize, -12)), 0);
    const code_len = alignUp(blob.len, page);
    const dst: [*]u8 = @ptrFromInt(region);
    @memcpy(dst[0..blob.len], blob);
    const plan_copy: *abi.Header = @ptrFromInt(region + code_len);
    const plan_bytes: [*]u8 = @ptrFromInt(region + code_len);
    @memcpy(plan_bytes[0..plan_len], @as([*]const u8, @ptrCast(p))[0..plan_len]);
    plan_copy.region_start = region;
    plan_copy.region_len = region_len;
    plan_copy.status_fd = status_fd;
    check(status_fd, pid, .region, sys.syscall3(NR.mprotect, region, code_len, sys.PROT_READ | sys.PROT_EXEC), 0);
    const stack_top = (region + code_len + alignUp(plan_len, page) + stack_size - 64) & ~@as(usize, 15);
    asm volatile (
        \\ mov %[sp], %%rsp
        \\ xor %%ebp, %%ebp
        \\ call *%[entry]
        \\ ud2
        :
        : [sp] "r" (stack_top),
          [entry] "r" (region),
          [plan] "{rdi}" (sys.ptr(plan_copy)),
        : .{ .memory = true });
    unreachable;
}

/// Layout facts the TypeScript plan writer checks itself against.
export fn ck_plan_layout(out: *[15]u64) void {
    out.* = .{
        @sizeOf(abi.Header),
        @offsetOf(abi.Header, "fds_off"),
        @offsetOf(abi.Header, "altstack_sp"),
        @offsetOf(abi.Header, "itimers"),
        @offsetOf(abi.Header, "mm"),
        @offsetOf(abi.Header, "comm"),
        @offsetOf(abi.Header, "cap_eff"),
        @sizeOf(abi.Vma),
        @offsetOf(abi.Header, "children_off"),
        @sizeOf(abi.Thread),
        @offsetOf(abi.Header, "ops_off"),
        @sizeOf(abi.Op),
        @sizeOf(abi.Child),
        @offsetOf(abi.Header, "cap_amb"),
        @offsetOf(abi.Header, "nspids_off"),
    };
}
