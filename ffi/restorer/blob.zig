//! The restorer blob. It is copied as raw bytes into a region that overlaps
//! none of the task's future mappings and entered at offset 0 with the plan
//! (copied right behind it) as its only argument. From here on nothing of the
//! process it was forked from may be touched: it tears that address space down,
//! builds the dumped one, restores per-task kernel state and then stops with
//! int3 so ckpt can set the final registers over ptrace and unmap this region.
const sys = @import("sys");
const abi = @import("abi.zig");
const ops = @import("ops.zig");
const NR = sys.NR;

export fn ckpt_restorer_entry(p: *abi.Header) linksection(".text.ckpt_entry") callconv(.c) noreturn {
    run(p);
}

fn at(comptime T: type, p: *abi.Header, off: u64) [*]T {
    return @ptrFromInt(@intFromPtr(p) + off);
}

fn fail(p: *abi.Header, stage: abi.Stage, rc: usize, detail: u64) noreturn {
    const f = abi.Failure{ .stage = @intFromEnum(stage), .errno = @intCast(-sys.signed(rc)), .detail = detail, .pid = p.pid };
    _ = sys.syscall3(NR.write, sys.int(p.status_fd), sys.ptr(&f), @sizeOf(abi.Failure));
    while (true) _ = sys.syscall1(NR.exit_group, 100 + @as(usize, @intFromEnum(stage)));
}

fn check(p: *abi.Header, stage: abi.Stage, rc: usize, detail: u64) void {
    if (sys.isErr(rc)) fail(p, stage, rc, detail);
}

fn runOps(p: *abi.Header, phase: u32) void {
    if (ops.runWith(sys, Hooks, p, phase)) |f| fail(p, .ops, f.rc, f.index);
}

const Hooks = struct {
    pub fn thread(p: *abi.Header, k: u64) usize {
        return spawnThread(p, @intCast(k));
    }
};

fn run(p: *abi.Header) noreturn {
    moveSpecials(p);
    unmapAllBut(p);
    mapVmas(p);
    if (p.flags & abi.flag_external_fill != 0) {
        asm volatile ("int3"
            :
            : [m] "{rax}" (abi.fill_magic),
            : .{ .memory = true });
    } else fillPages(p);
    if (p.flags & abi.flag_lazy != 0) registerLazy(p);
    protectVmas(p);
    setMm(p);
    runOps(p, abi.phase_after_memory);
    // Pages, exe and mapping fds were ckpt's, never the task's.
    _ = sys.syscall3(NR.close_range, sys.int(p.service_lo), sys.int(p.service_hi), 0);
    restoreSignals(p);
    restoreTimers(p);
    restoreThreadState(p);
    restoreMisc(p);
    restoreRlimits(p);
    runOps(p, abi.phase_before_creds);
    // Threads are created while the task is still root (clone3 with set_tid
    // needs CAP_CHECKPOINT_RESTORE), each by the thread that holds the
    // seccomp filters it is to inherit, and each sets its own credentials.
    runOps(p, abi.phase_thread);
    createOtherThreads(p);
    const creds = mainCreds(p);
    restoreCreds(p, &creds);
    // A credential change of any thread resets the process's dumpable flag:
    // it is set once every thread has its own.
    waitForThreads(p);
    check(p, .creds, sys.syscall2(NR.prctl, PR_SET_DUMPABLE, p.dumpable), 7);
    // Set last: the kernel clears the parent-death signal on credential changes.
    check(p, .creds, sys.syscall2(NR.prctl, PR_SET_PDEATHSIG, sys.int(p.pdeathsig)), 8);
    queuePending(p, p.pid);
    runOps(p, abi.phase_after_threads);
    runOps(p, abi.phase_last);
    _ = sys.syscall1(NR.close, sys.int(p.status_fd));
    // Hand over to ckpt: it sets the dumped registers, FPU state and signal
    // mask, unmaps this region and lets the task go.
    while (true) {
        asm volatile ("int3"
            :
            : [m] "{rax}" (abi.ready_magic),
              [s] "{rdi}" (p.region_start),
              [l] "{rsi}" (p.region_len),
            : .{ .memory = true });
    }
}

/// [vvar], [vvar_vclock] and [vdso] move together to the dumped addresses;
/// the plan orders the moves so that none lands on one not yet moved.
fn moveSpecials(p: *abi.Header) void {
    const moves = at(abi.SpecialMove, p, p.specials_off);
    var i: usize = 0;
    while (i < p.n_specials) : (i += 1) {
        const m = moves[i];
        if (m.cur == m.new) continue;
        const rc = sys.syscall5(NR.mremap, m.cur, m.len, m.len, sys.MREMAP_MAYMOVE | sys.MREMAP_FIXED, m.new);
        check(p, .vdso, rc, m.new);
    }
}

fn keep(p: *abi.Header, i: usize) struct { lo: u64, hi: u64 } {
    // Keep-list: the specials at their new place (sorted by the plan), and the
    // region itself, merged on the fly.
    const moves = at(abi.SpecialMove, p, p.specials_off);
    if (i < p.n_specials) return .{ .lo = moves[i].new, .hi = moves[i].new + moves[i].len };
    return .{ .lo = p.region_start, .hi = p.region_start + p.region_len };
}

fn unmapAllBut(p: *abi.Header) void {
    const n: usize = @intCast(p.n_specials + 1);
    // Visit keep ranges in address order without sorting (n is tiny).
    var cursor: u64 = 0;
    var done: usize = 0;
    while (done < n) : (done += 1) {
        var best: usize = n;
        var best_lo: u64 = ~@as(u64, 0);
        var i: usize = 0;
        while (i < n) : (i += 1) {
            const k = keep(p, i);
            if (k.lo >= cursor and k.lo < best_lo) {
                best = i;
                best_lo = k.lo;
            }
        }
        if (best == n) break;
        const k = keep(p, best);
        if (k.lo > cursor) check(p, .unmap, sys.syscall2(NR.munmap, cursor, k.lo - cursor), cursor);
        cursor = k.hi;
    }
    if (cursor < p.task_size) check(p, .unmap, sys.syscall2(NR.munmap, cursor, p.task_size - cursor), cursor);
}

fn mapVmas(p: *abi.Header) void {
    const vmas = at(abi.Vma, p, p.vmas_off);
    var i: usize = 0;
    while (i < p.n_vmas) : (i += 1) {
        const v = vmas[i];
        var prot: usize = v.prot;
        if (v.flags & abi.vma_fill != 0) prot |= sys.PROT_READ | sys.PROT_WRITE;
        const fd: usize = sys.int(v.fd);
        const rc = sys.syscall6(NR.mmap, v.start, v.end - v.start, prot, v.map_flags | sys.MAP_FIXED, fd, v.pgoff);
        check(p, .map_vma, rc, v.start);
        if (rc != v.start) fail(p, .map_vma, sys.int(@as(isize, -14)), v.start);
    }
}

const MADV_POPULATE_WRITE = 23;

fn fillPages(p: *abi.Header) void {
    const fills = at(abi.PageFill, p, p.fills_off);
    var i: usize = 0;
    while (i < p.n_fills) : (i += 1) {
        const f = fills[i];
        // Faulting the range in one call is much cheaper than taking a page
        // fault per page inside pread's copy; failure only costs speed.
        _ = sys.syscall3(NR.madvise, f.addr, f.len, MADV_POPULATE_WRITE);
        var done: u64 = 0;
        while (done < f.len) {
            const rc = sys.syscall4(NR.pread64, sys.int(p.pages_fd), f.addr + done, f.len - done, f.file_off + done);
            if (sys.signed(rc) == -4) continue;
            check(p, .fill_pages, rc, f.addr + done);
            if (rc == 0) fail(p, .fill_pages, sys.int(@as(isize, -5)), f.addr + done);
            done += rc;
        }
    }
}

/// Missing-page faults in the vma_lazy mappings go to a userfaultfd that
/// ckpt copies out at the stop and serves; nothing here touches those
/// mappings before the stop, and afterwards a fault (rseq registration, say)
/// waits for ckpt like any other. The events let ckpt follow the program
/// while pages are still arriving: without them a fork would leave the child
/// zero pages, a remapped range would lose its registration, and a discarded
/// one would be filled again with dumped bytes. Asking for fork events needs
/// CAP_SYS_PTRACE, which the restorer still has here.
const lazy_features = sys.UFFD_FEATURE_EVENT_FORK | sys.UFFD_FEATURE_EVENT_REMAP |
    sys.UFFD_FEATURE_EVENT_REMOVE | sys.UFFD_FEATURE_EVENT_UNMAP;

fn registerLazy(p: *abi.Header) void {
    const rc = sys.syscall1(NR.userfaultfd, sys.O_CLOEXEC | sys.O_NONBLOCK);
    check(p, .lazy, rc, 0);
    var api = sys.UffdioApi{ .api = sys.UFFD_API, .features = lazy_features, .ioctls = 0 };
    check(p, .lazy, sys.syscall3(NR.ioctl, rc, sys.UFFDIO_API, sys.ptr(&api)), 1);
    const vmas = at(abi.Vma, p, p.vmas_off);
    var i: usize = 0;
    while (i < p.n_vmas) : (i += 1) {
        const v = vmas[i];
        if (v.flags & abi.vma_lazy == 0) continue;
        var reg = sys.UffdioRegister{
            .range = .{ .start = v.start, .len = v.end - v.start },
            .mode = sys.UFFDIO_REGISTER_MODE_MISSING,
            .ioctls = 0,
        };
        check(p, .lazy, sys.syscall3(NR.ioctl, rc, sys.UFFDIO_REGISTER, sys.ptr(&reg)), v.start);
    }
    asm volatile ("int3"
        :
        : [m] "{rax}" (abi.lazy_magic),
          [f] "{rdi}" (rc),
        : .{ .memory = true });
    _ = sys.syscall1(NR.close, rc);
}

fn protectVmas(p: *abi.Header) void {
    const vmas = at(abi.Vma, p, p.vmas_off);
    var i: usize = 0;
    while (i < p.n_vmas) : (i += 1) {
        const v = vmas[i];
        if (v.flags & abi.vma_fill == 0) continue;
        if (v.prot == sys.PROT_READ | sys.PROT_WRITE) continue;
        check(p, .protect, sys.syscall3(NR.mprotect, v.start, v.end - v.start, v.prot), v.start);
    }
}

const PR_SET_PDEATHSIG = 1;
const PR_SET_DUMPABLE = 4;
const PR_SET_KEEPCAPS = 8;
const PR_SET_NAME = 15;
const PR_CAPBSET_DROP = 24;
const PR_SET_MM = 35;
const PR_SET_MM_MAP = 14;

const PrctlMmMap = extern struct {
    mm: abi.MmMap,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
};

fn setMm(p: *abi.Header) void {
    var m = PrctlMmMap{
        .mm = p.mm,
        .auxv = @intFromPtr(p) + p.auxv_off,
        .auxv_size = @intCast(p.auxv_len),
        .exe_fd = if (p.exe_fd >= 0) @intCast(p.exe_fd) else ~@as(u32, 0),
    };
    if (p.auxv_len == 0) m.auxv = 0;
    check(p, .mm_map, sys.syscall5(NR.prctl, PR_SET_MM, PR_SET_MM_MAP, sys.ptr(&m), @sizeOf(PrctlMmMap), 0), 0);
}

fn restoreSignals(p: *abi.Header) void {
    const acts = at(abi.SigAction, p, p.sigact_off);
    var sig: usize = 1;
    while (sig <= 64) : (sig += 1) {
        if (sig == sys.SIGKILL or sig == sys.SIGSTOP) continue;
        const rc = sys.syscall4(NR.rt_sigaction, sig, sys.ptr(&acts[sig - 1]), 0, 8);
        check(p, .signals, rc, sig);
    }
    // Always set: the task was forked from ckpt and still has ckpt's own
    // alternate stack, and an SA_ONSTACK handler would build its frame there.
    // SS_DISABLE (2) means none; of the rest only SS_AUTODISARM is a setting.
    const ss = if (p.altstack_flags & 2 == 0 and p.altstack_size != 0)
        AltStack{ .sp = p.altstack_sp, .flags = @as(u32, @bitCast(p.altstack_flags)) & 0x80000000, .size = p.altstack_size }
    else
        AltStack{ .sp = 0, .flags = 2, .size = 0 };
    check(p, .signals, sys.syscall2(NR.sigaltstack, sys.ptr(&ss), 0), 0);
}

const AltStack = extern struct { sp: u64, flags: u32, _pad: u32 = 0, size: u64 };

fn restoreTimers(p: *abi.Header) void {
    var which: usize = 0;
    while (which < 3) : (which += 1) {
        const t = p.itimers[which];
        if (t.value_sec == 0 and t.value_usec == 0) continue;
        check(p, .timers, sys.syscall3(NR.setitimer, which, sys.ptr(&t), 0), which);
    }
}

fn restoreThreadState(p: *abi.Header) void {
    _ = sys.syscall1(NR.set_tid_address, p.tid_address);
    if (p.robust_head != 0)
        check(p, .thread_state, sys.syscall2(NR.set_robust_list, p.robust_head, p.robust_len), 1);
    if (p.rseq_addr != 0)
        check(p, .thread_state, sys.syscall4(NR.rseq, p.rseq_addr, p.rseq_len, 0, p.rseq_sig), 2);
}

fn restoreMisc(p: *abi.Header) void {
    check(p, .misc, sys.syscall1(NR.personality, p.personality), 1);
    _ = sys.syscall1(NR.umask, p.umask);
    check(p, .misc, sys.syscall2(NR.prctl, PR_SET_NAME, sys.ptr(&p.comm)), 2);
}

fn restoreRlimits(p: *abi.Header) void {
    const lims = at(abi.Rlimit, p, p.rlimits_off);
    var i: usize = 0;
    while (i < p.n_rlimits) : (i += 1) {
        const l = lims[i];
        const v = [2]u64{ l.cur, l.max };
        check(p, .rlimits, sys.syscall4(NR.prlimit64, 0, l.resource, sys.ptr(&v), 0), l.resource);
    }
}

const CapHeader = extern struct { version: u32, pid: i32 };
const CapData = extern struct { effective: u32, permitted: u32, inheritable: u32 };
const PR_SET_NO_NEW_PRIVS = 38;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_RAISE = 2;

fn mainCreds(p: *abi.Header) abi.Creds {
    return .{
        .uids = p.uids,
        .gids = p.gids,
        .cap_eff = p.cap_eff,
        .cap_prm = p.cap_prm,
        .cap_inh = p.cap_inh,
        .cap_bnd = p.cap_bnd,
        .cap_amb = p.cap_amb,
        .groups_off = p.groups_off,
        .n_groups = @intCast(p.n_groups),
        .no_new_privs = p.no_new_privs,
    };
}

/// The calling thread's credentials: every call here acts on one thread.
fn restoreCreds(p: *abi.Header, c: *const abi.Creds) void {
    // Bounding set first: dropping needs CAP_SETPCAP, which may go below.
    var cap: usize = 0;
    while (cap < 64) : (cap += 1) {
        if (c.cap_bnd & (@as(u64, 1) << @intCast(cap)) != 0) continue;
        const rc = sys.syscall2(NR.prctl, PR_CAPBSET_DROP, cap);
        if (sys.signed(rc) == -22) break; // EINVAL: past the last capability
        check(p, .creds, rc, 100 + cap);
    }
    const groups = at(u32, p, c.groups_off);
    if (p.flags & abi.flag_keep_groups == 0) {
        check(p, .creds, sys.syscall2(NR.setgroups, c.n_groups, sys.ptr(groups)), 1);
    }
    check(p, .creds, sys.syscall2(NR.prctl, PR_SET_KEEPCAPS, 1), 2);
    check(p, .creds, sys.syscall3(NR.setresgid, c.gids[0], c.gids[1], c.gids[2]), 3);
    _ = sys.syscall1(NR.setfsgid, c.gids[3]);
    check(p, .creds, sys.syscall3(NR.setresuid, c.uids[0], c.uids[1], c.uids[2]), 4);
    _ = sys.syscall1(NR.setfsuid, c.uids[3]);
    var hdr = CapHeader{ .version = 0x20080522, .pid = 0 };
    const data = [2]CapData{
        .{ .effective = @truncate(c.cap_eff), .permitted = @truncate(c.cap_prm), .inheritable = @truncate(c.cap_inh) },
        .{ .effective = @truncate(c.cap_eff >> 32), .permitted = @truncate(c.cap_prm >> 32), .inheritable = @truncate(c.cap_inh >> 32) },
    };
    check(p, .creds, sys.syscall2(NR.capset, sys.ptr(&hdr), sys.ptr(&data)), 5);
    // Ambient capabilities, cleared by the uid change, need the capability
    // permitted and inheritable: after capset.
    cap = 0;
    while (cap < 64) : (cap += 1) {
        if (c.cap_amb & (@as(u64, 1) << @intCast(cap)) == 0) continue;
        check(p, .creds, sys.syscall5(NR.prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0), 200 + cap);
    }
    check(p, .creds, sys.syscall2(NR.prctl, PR_SET_KEEPCAPS, 0), 6);
    if (c.no_new_privs != 0) check(p, .creds, sys.syscall5(NR.prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 9);
}

/// Queues the signals pending for `tid` (the main thread also takes the
/// process-wide queue). Each thread queues its own: the kernel lets a
/// siginfo that looks kernel-made (si_code >= 0) be queued only by the
/// thread it is for.
fn queuePending(p: *abi.Header, tid: i32) void {
    const sigs = at(abi.QueuedSig, p, p.siginfo_off);
    // The plan's ids are ckpt's; the calls take the task's own (its PID
    // namespace's), which the calling thread has at hand.
    const tgid = sys.syscall0(NR.getpid);
    const self = sys.syscall0(NR.gettid);
    var i: usize = 0;
    while (i < p.n_siginfo) : (i += 1) {
        const s = &sigs[i];
        const mine = s.tid == @as(u32, @bitCast(tid)) or (s.tid == 0 and tid == p.pid);
        if (!mine) continue;
        const rc = if (s.tid == 0)
            sys.syscall3(NR.rt_sigqueueinfo, tgid, s.signo, sys.ptr(&s.info))
        else
            sys.syscall4(NR.rt_tgsigqueueinfo, tgid, self, s.signo, sys.ptr(&s.info));
        check(p, .pending, rc, s.signo);
    }
}

const CloneArgs = sys.CloneArgs;

// CLONE_VM | FS | FILES | SIGHAND | THREAD | SYSVSEM: a thread like pthreads'.
const thread_flags: u64 = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000;

const FUTEX_WAIT_PRIVATE = 128;
const FUTEX_WAKE_PRIVATE = 129;

fn threadAt(p: *abi.Header, k: usize) *abi.Thread {
    return &at(abi.Thread, p, p.threads_off)[k];
}

/// Creates threads[k] with its own TID, on its own stack in the region. It
/// sets its per-thread kernel state, runs its own ops (the threads it
/// creates, its seccomp filters), sets its credentials and stops like the
/// main thread; ckpt gives each its registers.
fn spawnThread(p: *abi.Header, k: usize) usize {
    if (k >= p.n_threads) return sys.int(@as(isize, -22));
    const t = threadAt(p, k);
    const stacks = p.region_start + p.region_len - p.n_threads * abi.thread_stack;
    var tid: i32 = t.tid;
    // In a PID namespace: its tid at every level, innermost first.
    const all = at(i32, p, p.nspids_off);
    const levels = t.n_tids > 0 and @as(u64, t.tids_at) + t.n_tids <= p.n_nspids;
    const args = CloneArgs{
        .flags = thread_flags,
        .stack = stacks + k * abi.thread_stack,
        .stack_size = abi.thread_stack - 64,
        .set_tid = if (levels) @intFromPtr(&all[t.tids_at]) else @intFromPtr(&tid),
        .set_tid_size = if (levels) t.n_tids else 1,
    };
    @atomicStore(u32, &t.state, 1, .release);
    return cloneThread(&args, @intFromPtr(&threadMain), @intFromPtr(t), @intFromPtr(p));
}

/// The threads no op creates.
fn createOtherThreads(p: *abi.Header) void {
    var k: usize = 0;
    while (k < p.n_threads) : (k += 1) {
        const t = threadAt(p, k);
        if (@atomicLoad(u32, &t.state, .acquire) != 0 or ops.namesThread(p, k)) continue;
        check(p, .threads, spawnThread(p, k), @intCast(t.tid));
    }
}

fn waitForThreads(p: *abi.Header) void {
    var k: usize = 0;
    while (k < p.n_threads) : (k += 1) {
        const t = threadAt(p, k);
        while (true) {
            const v = @atomicLoad(u32, &t.state, .acquire);
            if (v == 2) break;
            // A thread that fails takes the whole task down (exit_group).
            _ = sys.syscall4(NR.futex, @intFromPtr(&t.state), FUTEX_WAIT_PRIVATE, v, 0);
        }
    }
}

fn cloneThread(args: *const CloneArgs, entry: usize, arg: usize, arg2: usize) usize {
    // The new thread starts on its own stack with the same registers: it
    // calls entry(arg, arg2) from r13/r12/r14 and never returns here.
    return asm volatile (
        \\ syscall
        \\ test %%rax, %%rax
        \\ jnz 1f
        \\ mov %%r12, %%rdi
        \\ mov %%r14, %%rsi
        \\ xor %%ebp, %%ebp
        \\ call *%%r13
        \\ ud2
        \\ 1:
        : [ret] "={rax}" (-> usize),
        : [nr] "{rax}" (@as(usize, NR.clone3)),
          [a] "{rdi}" (@intFromPtr(args)),
          [s] "{rsi}" (@as(usize, @sizeOf(CloneArgs))),
          [f] "{r13}" (entry),
          [x] "{r12}" (arg),
          [y] "{r14}" (arg2),
        : .{ .rcx = true, .r11 = true, .memory = true });
}

fn threadMain(t: *abi.Thread, p: *abi.Header) callconv(.c) noreturn {
    if (t.altstack_flags & 2 == 0 and t.altstack_size != 0) {
        const flags: u32 = @as(u32, @bitCast(t.altstack_flags)) & 0x80000000;
        const ss = extern struct { sp: u64, flags: u32, _pad: u32 = 0, size: u64 }{ .sp = t.altstack_sp, .flags = flags, .size = t.altstack_size };
        check(p, .thread_state, sys.syscall2(NR.sigaltstack, sys.ptr(&ss), 0), 3);
    }
    _ = sys.syscall1(NR.set_tid_address, t.tid_address);
    if (t.robust_head != 0) check(p, .thread_state, sys.syscall2(NR.set_robust_list, t.robust_head, t.robust_len), 1);
    if (t.rseq_addr != 0) check(p, .thread_state, sys.syscall4(NR.rseq, t.rseq_addr, t.rseq_len, 0, t.rseq_sig), 2);
    _ = sys.syscall2(NR.prctl, PR_SET_NAME, sys.ptr(&t.comm));
    const k = (@intFromPtr(t) - (@intFromPtr(p) + p.threads_off)) / @sizeOf(abi.Thread);
    runOps(p, abi.phase_thread + 1 + @as(u32, @intCast(k)));
    restoreCreds(p, &t.creds);
    queuePending(p, t.tid);
    @atomicStore(u32, &t.state, 2, .release);
    _ = sys.syscall3(NR.futex, @intFromPtr(&t.state), FUTEX_WAKE_PRIVATE, 1);
    while (true) {
        asm volatile ("int3"
            :
            : [m] "{rax}" (abi.ready_magic),
              [s] "{rdi}" (@as(u64, 0)),
              [l] "{rsi}" (@as(u64, 0)),
            : .{ .memory = true });
    }
}

pub fn panic(_: []const u8, _: ?*anyopaque, _: ?usize) noreturn {
    while (true) _ = sys.syscall1(NR.exit_group, 99);
}
