//! Restore, native half: fork the task with its exact PID (clone3 + set_tid),
//! and in the child — a fork of a multi-threaded runtime, so raw syscalls only —
//! rebuild session, fds, cwd and root, then copy the restorer blob and the plan
//! to a free region and jump there. The final registers are set over ptrace.
const sys = @import("sys.zig");
const abi = @import("restorer/abi.zig");
const NR = sys.NR;

const blob = @embedFile("restorer_blob");
const stack_size: usize = 256 << 10;
const page: usize = 4096;

export fn ck_restorer_size() u64 {
    return blob.len;
}

/// Bytes the restorer region needs for a plan of plan_len bytes.
export fn ck_region_size(plan_len: u64) u64 {
    return alignUp(blob.len, page) + alignUp(plan_len, page) + stack_size;
}

fn alignUp(v: u64, a: u64) u64 {
    return (v + a - 1) & ~(a - 1);
}

const CloneArgs = extern struct {
    flags: u64 = 0,
    pidfd: u64 = 0,
    child_tid: u64 = 0,
    parent_tid: u64 = 0,
    exit_signal: u64 = 0,
    stack: u64 = 0,
    stack_size: u64 = 0,
    tls: u64 = 0,
    set_tid: u64 = 0,
    set_tid_size: u64 = 0,
    cgroup: u64 = 0,
};

/// Forks the task that becomes `pid` (0: any pid). Returns its pid to the
/// caller, or -errno (EEXIST: the pid is taken). The child never returns.
/// status_fd is the write end of a pipe the child reports a failure on.
/// rseq_offset/rseq_size: glibc's __rseq_offset and __rseq_size for the
/// calling thread (size 0: no registration). The child inherits that rseq
/// registration, whose area is about to be unmapped: it must drop it first.
export fn ck_restore_spawn(plan: [*]u8, plan_len: usize, pid: i32, status_fd: i32, rseq_offset: i64, rseq_size: u32) i64 {
    var want: i32 = pid;
    var args = CloneArgs{ .exit_signal = sys.SIGCHLD };
    if (pid > 0) {
        args.set_tid = sys.ptr(&want);
        args.set_tid_size = 1;
    }
    const rc = sys.syscall2(NR.clone3, sys.ptr(&args), @sizeOf(CloneArgs));
    if (sys.isErr(rc)) return sys.signed(rc);
    if (rc != 0) return @intCast(rc);
    child(@ptrCast(@alignCast(plan)), plan_len, status_fd, rseq_offset, rseq_size);
}

const RSEQ_FLAG_UNREGISTER = 1;
const RSEQ_SIG_GLIBC_X86 = 0x53053053;
const ARCH_GET_FS = 0x1003;

fn dropInheritedRseq(status_fd: i32, offset: i64, size: u32) void {
    if (size == 0) return;
    var fs: u64 = 0;
    check(status_fd, .child_setup, sys.syscall2(NR.arch_prctl, ARCH_GET_FS, sys.ptr(&fs)), 3);
    const area: u64 = @bitCast(@as(i64, @bitCast(fs)) + offset);
    // glibc registers 32 bytes (older) or its feature size (newer).
    var rc = sys.syscall4(NR.rseq, area, 32, RSEQ_FLAG_UNREGISTER, RSEQ_SIG_GLIBC_X86);
    if (sys.isErr(rc) and size != 32) rc = sys.syscall4(NR.rseq, area, size, RSEQ_FLAG_UNREGISTER, RSEQ_SIG_GLIBC_X86);
    check(status_fd, .child_setup, rc, 4);
}

fn fail(fd: i32, stage: abi.Stage, rc: usize, detail: u64) noreturn {
    const f = abi.Failure{ .stage = @intFromEnum(stage), .errno = @intCast(-sys.signed(rc)), .detail = detail };
    _ = sys.syscall3(NR.write, sys.int(fd), sys.ptr(&f), @sizeOf(abi.Failure));
    while (true) _ = sys.syscall1(NR.exit_group, 100 + @as(usize, @intFromEnum(stage)));
}

fn check(fd: i32, stage: abi.Stage, rc: usize, detail: u64) void {
    if (sys.isErr(rc)) fail(fd, stage, rc, detail);
}

const F_DUPFD = 0;
const PR_SET_PDEATHSIG = 1;

fn child(p: *abi.Header, plan_len: usize, status_fd0: i32, rseq_offset: i64, rseq_size: u32) noreturn {
    var status_fd = status_fd0;
    const all: u64 = ~@as(u64, 0);
    _ = sys.syscall4(NR.rt_sigprocmask, 2, sys.ptr(&all), 0, 8); // SIG_SETMASK
    check(status_fd, .child_setup, sys.syscall2(NR.prctl, PR_SET_PDEATHSIG, sys.SIGKILL), 1);
    check(status_fd, .child_setup, sys.syscall4(NR.ptrace, sys.PTRACE.TRACEME, 0, 0, 0), 2);
    dropInheritedRseq(status_fd, rseq_offset, rseq_size);

    if (p.flags & abi.flag_setsid != 0) check(status_fd, .session, sys.syscall0(NR.setsid), 1);
    if (p.flags & abi.flag_setpgid != 0) check(status_fd, .session, sys.syscall2(NR.setpgid, 0, 0), 2);

    // fds: park every source above all numbers in play, then place them, then
    // close everything that is not a destination (moves come sorted by dst).
    const moves: [*]abi.FdMove = @ptrFromInt(@intFromPtr(p) + p.fds_off);
    const n: usize = @intCast(p.n_fds);
    var top: i32 = status_fd;
    for (moves[0..n]) |m| top = @max(top, @max(m.src, m.dst));
    const park = top + 1;
    for (moves[0..n]) |*m| {
        const rc = sys.syscall3(NR.fcntl, sys.int(m.src), F_DUPFD, sys.int(park));
        check(status_fd, .fds, rc, @intCast(m.src));
        m.src = @intCast(rc);
    }
    const parked_status = sys.syscall3(NR.fcntl, sys.int(status_fd), F_DUPFD, sys.int(park));
    check(status_fd, .fds, parked_status, 0);
    status_fd = @intCast(parked_status);
    for (moves[0..n]) |m| {
        const flags: usize = if (m.cloexec != 0) sys.O_CLOEXEC else 0;
        check(status_fd, .fds, sys.syscall3(NR.dup3, sys.int(m.src), sys.int(m.dst), flags), @intCast(m.dst));
    }
    check(status_fd, .fds, sys.syscall3(NR.dup3, sys.int(status_fd), sys.int(p.status_fd), 0), 1000);
    status_fd = p.status_fd;
    var next: i32 = 0;
    for (moves[0..n]) |m| {
        if (m.dst > next) _ = sys.syscall3(NR.close_range, sys.int(next), sys.int(m.dst - 1), 0);
        next = m.dst + 1;
    }
    if (status_fd >= next) {
        if (status_fd > next) _ = sys.syscall3(NR.close_range, sys.int(next), sys.int(status_fd - 1), 0);
        next = status_fd + 1;
    }
    _ = sys.syscall3(NR.close_range, sys.int(next), 0xffffffff, 0);

    if (p.root_fd >= 0) {
        check(status_fd, .cwd_root, sys.syscall1(NR.fchdir, sys.int(p.root_fd)), 1);
        check(status_fd, .cwd_root, sys.syscall1(NR.chroot, sys.ptr(".")), 2);
    }
    if (p.cwd_fd >= 0) check(status_fd, .cwd_root, sys.syscall1(NR.fchdir, sys.int(p.cwd_fd)), 3);

    // The region: blob, plan copy, stack — at the first free hint.
    const region_len = ck_region_size(plan_len);
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
    if (region == 0) fail(status_fd, .region, sys.int(@as(isize, -12)), 0);
    const code_len = alignUp(blob.len, page);
    const dst: [*]u8 = @ptrFromInt(region);
    @memcpy(dst[0..blob.len], blob);
    const plan_copy: *abi.Header = @ptrFromInt(region + code_len);
    const plan_bytes: [*]u8 = @ptrFromInt(region + code_len);
    @memcpy(plan_bytes[0..plan_len], @as([*]const u8, @ptrCast(p))[0..plan_len]);
    plan_copy.region_start = region;
    plan_copy.region_len = region_len;
    plan_copy.status_fd = status_fd;
    check(status_fd, .region, sys.syscall3(NR.mprotect, region, code_len, sys.PROT_READ | sys.PROT_EXEC), 0);
    const stack_top = (region + region_len - 64) & ~@as(usize, 15);
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
export fn ck_plan_layout(out: *[8]u64) void {
    out.* = .{
        @sizeOf(abi.Header),
        @offsetOf(abi.Header, "fds_off"),
        @offsetOf(abi.Header, "altstack_sp"),
        @offsetOf(abi.Header, "itimers"),
        @offsetOf(abi.Header, "mm"),
        @offsetOf(abi.Header, "comm"),
        @offsetOf(abi.Header, "cap_eff"),
        @sizeOf(abi.Vma),
    };
}
