//! ptrace for dump (seize, interrupt, registers, signals, single-syscall
//! injection) and for the end of restore. Every call for one tracee must come
//! from the thread that attached, so these are always called synchronously.
const sys = @import("sys.zig");
const P = sys.PTRACE;

fn pt(req: usize, pid: i32, addr: usize, data: usize) usize {
    return sys.syscall4(sys.NR.ptrace, req, sys.int(pid), addr, data);
}

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

export fn ck_ptrace_seize(pid: i32, options: u64) i64 {
    return ret(pt(P.SEIZE, pid, 0, options));
}

export fn ck_ptrace_interrupt(pid: i32) i64 {
    return ret(pt(P.INTERRUPT, pid, 0, 0));
}

export fn ck_ptrace_detach(pid: i32, sig: i32) i64 {
    return ret(pt(P.DETACH, pid, 0, sys.int(sig)));
}

export fn ck_ptrace_cont(pid: i32, sig: i32) i64 {
    return ret(pt(P.CONT, pid, 0, sys.int(sig)));
}

export fn ck_ptrace_setoptions(pid: i32, options: u64) i64 {
    return ret(pt(P.SETOPTIONS, pid, 0, options));
}

export fn ck_ptrace_geteventmsg(pid: i32, out: *u64) i64 {
    return ret(pt(P.GETEVENTMSG, pid, 0, sys.ptr(out)));
}

/// wait4 for one pid; returns the raw status word, 0 when WNOHANG found nothing.
export fn ck_wait(pid: i32, flags: i32, status_out: *i32) i64 {
    status_out.* = 0;
    while (true) {
        const rc = sys.syscall4(sys.NR.wait4, sys.int(pid), sys.ptr(status_out), sys.int(flags), 0);
        if (sys.signed(rc) == -4) continue; // EINTR
        return ret(rc);
    }
}

export fn ck_get_regs(pid: i32, out: *sys.UserRegs) i64 {
    var iov = sys.Iovec{ .base = sys.ptr(out), .len = @sizeOf(sys.UserRegs) };
    return ret(pt(P.GETREGSET, pid, sys.NT_PRSTATUS, sys.ptr(&iov)));
}

export fn ck_set_regs(pid: i32, regs: *const sys.UserRegs) i64 {
    var iov = sys.Iovec{ .base = sys.ptr(regs), .len = @sizeOf(sys.UserRegs) };
    return ret(pt(P.SETREGSET, pid, sys.NT_PRSTATUS, sys.ptr(&iov)));
}

/// Reads the XSAVE area (standard format) into buf; returns its length.
export fn ck_get_xstate(pid: i32, buf: [*]u8, len: usize) i64 {
    var iov = sys.Iovec{ .base = sys.ptr(buf), .len = len };
    const rc = pt(P.GETREGSET, pid, sys.NT_X86_XSTATE, sys.ptr(&iov));
    if (sys.isErr(rc)) return ret(rc);
    return @intCast(iov.len);
}

export fn ck_set_xstate(pid: i32, buf: [*]const u8, len: usize) i64 {
    var iov = sys.Iovec{ .base = sys.ptr(buf), .len = len };
    return ret(pt(P.SETREGSET, pid, sys.NT_X86_XSTATE, sys.ptr(&iov)));
}

export fn ck_get_sigmask(pid: i32, out: *u64) i64 {
    return ret(pt(P.GETSIGMASK, pid, 8, sys.ptr(out)));
}

export fn ck_set_sigmask(pid: i32, mask: u64) i64 {
    var m = mask;
    return ret(pt(P.SETSIGMASK, pid, 8, sys.ptr(&m)));
}

const PeekSiginfoArgs = extern struct { off: u64, flags: u32, nr: i32 };

/// Copies up to max queued siginfos (128 bytes each) without dequeuing them.
/// shared != 0 reads the process-wide queue, else the thread's own.
export fn ck_peek_siginfo(pid: i32, shared: i32, buf: [*]u8, max: i32) i64 {
    var args = PeekSiginfoArgs{ .off = 0, .flags = if (shared != 0) 1 else 0, .nr = max };
    return ret(pt(P.PEEKSIGINFO, pid, sys.ptr(&args), sys.ptr(buf)));
}

const RseqConfig = extern struct { rseq_abi_pointer: u64, rseq_abi_size: u32, signature: u32, flags: u32, pad: u32 };

export fn ck_get_rseq(pid: i32, addr: *u64, size: *u32, sig: *u32) i64 {
    var cfg: RseqConfig = .{ .rseq_abi_pointer = 0, .rseq_abi_size = 0, .signature = 0, .flags = 0, .pad = 0 };
    const rc = pt(P.GET_RSEQ_CONFIGURATION, pid, @sizeOf(RseqConfig), sys.ptr(&cfg));
    if (sys.isErr(rc)) return ret(rc);
    addr.* = cfg.rseq_abi_pointer;
    size.* = cfg.rseq_abi_size;
    sig.* = cfg.signature;
    return 0;
}

export fn ck_get_robust_list(pid: i32, head: *u64, len: *u64) i64 {
    return ret(sys.syscall3(sys.NR.get_robust_list, sys.int(pid), sys.ptr(head), sys.ptr(len)));
}

/// PTRACE_SECCOMP_GET_FILTER: the index-th filter of a stopped tracee, oldest
/// first, as struct sock_filter[] into buf (len instructions at most; buf
/// may be null to ask only the count). Returns the instruction count.
export fn ck_seccomp_get_filter(pid: i32, index: u64, buf: ?[*]u8) i64 {
    return ret(pt(P.SECCOMP_GET_FILTER, pid, index, if (buf) |b| sys.ptr(b) else 0));
}

const SeccompMetadata = extern struct { filter_off: u64, flags: u64 };

/// PTRACE_SECCOMP_GET_METADATA: the flags (SECCOMP_FILTER_FLAG_LOG) the
/// index-th filter was installed with.
export fn ck_seccomp_get_metadata(pid: i32, index: u64, flags: *u64) i64 {
    var md = SeccompMetadata{ .filter_off = index, .flags = 0 };
    const rc = pt(P.SECCOMP_GET_METADATA, pid, @sizeOf(SeccompMetadata), sys.ptr(&md));
    if (sys.isErr(rc)) return ret(rc);
    flags.* = md.flags;
    return 0;
}

export fn ck_peek_word(pid: i32, addr: u64, out: *u64) i64 {
    // PTRACE_PEEKDATA through the raw syscall stores the word at `data`.
    return ret(pt(P.PEEKDATA, pid, addr, sys.ptr(out)));
}

export fn ck_poke_word(pid: i32, addr: u64, word: u64) i64 {
    return ret(pt(P.POKEDATA, pid, addr, word));
}

const PTRACE_EVENT_STOP = 128;

/// Makes a stopped tracee run one system call and stop again, with all its
/// state put back afterwards. The instruction `syscall; int3` is written over
/// the start of the page holding the tracee's ip (always mapped executable)
/// and restored, and every signal is blocked meanwhile so nothing queued is
/// delivered or lost. Returns 0 and the call's result in `result`.
export fn ck_inject_syscall(pid: i32, nr: u64, args: *const [6]u64, result: *i64) i64 {
    return inject(pid, nr, args, result, null);
}

const PTRACE_O_TRACECLONE = 8;
const PTRACE_EVENT_CLONE = 3;

/// Makes a frozen task fork a frozen copy of itself: clone(0) injected, so
/// the copy sends no SIGCHLD and is invisible to plain wait(). ckpt traces
/// the copy (auto-attached, stopped before it runs anything) and reads the
/// task's memory from it while the task runs on. The injected instruction
/// bytes are put back in the copy's memory too. Returns the copy's pid.
/// `keep`: the options the task is traced with (PTRACE_O_SUSPEND_SECCOMP),
/// which must stay set around the clone.
export fn ck_snapshot_fork(pid: i32, keep: u64, copy_out: *[2]i32) i64 {
    var rc = ck_ptrace_setoptions(pid, keep | PTRACE_O_TRACECLONE);
    if (rc < 0) return rc;
    const args = [6]u64{ 0, 0, 0, 0, 0, 0 };
    var result: i64 = 0;
    var copy: i32 = 0;
    rc = inject(pid, 56, &args, &result, &copy); // clone
    // Only this one clone is traced: the task's own later ones must not stop.
    const r2 = ck_ptrace_setoptions(pid, keep);
    if (rc < 0) return rc;
    if (r2 < 0) return r2;
    if (result < 0) return result;
    // The clone event's pid is the copy's in ckpt's PID namespace, clone's
    // result its pid in the task's (they differ in a PID namespace).
    copy_out[0] = if (copy > 0) copy else @intCast(result);
    copy_out[1] = @intCast(result);
    return 0;
}

/// The injection itself. With `copy` set the call is expected to clone the
/// task once: the clone event is let through, the copy's first stop awaited,
/// and the injected bytes restored in the copy as well.
fn inject(pid: i32, nr: u64, args: *const [6]u64, result: *i64, copy: ?*i32) i64 {
    var saved: sys.UserRegs = undefined;
    var rc = ck_get_regs(pid, &saved);
    if (rc < 0) return rc;
    var saved_mask: u64 = 0;
    rc = ck_get_sigmask(pid, &saved_mask);
    if (rc < 0) return rc;
    const addr = saved.rip & ~@as(u64, 0xfff);
    var saved_word: u64 = 0;
    rc = ck_peek_word(pid, addr, &saved_word);
    if (rc < 0) return rc;

    rc = ck_set_sigmask(pid, ~@as(u64, 0));
    if (rc < 0) return rc;
    const code: u64 = 0xcc050f; // syscall; int3
    rc = ck_poke_word(pid, addr, (saved_word & ~@as(u64, 0xffffff)) | code);
    if (rc < 0) {
        _ = ck_set_sigmask(pid, saved_mask);
        return rc;
    }
    var regs = saved;
    regs.rip = addr;
    regs.rax = nr;
    regs.orig_rax = ~@as(u64, 0); // not in a syscall: no restart logic on resume
    regs.rdi = args[0];
    regs.rsi = args[1];
    regs.rdx = args[2];
    regs.r10 = args[3];
    regs.r8 = args[4];
    regs.r9 = args[5];
    var outcome: i64 = ck_set_regs(pid, &regs);
    var child: i32 = 0;
    if (outcome == 0) outcome = runToTrap(pid, &child);
    if (outcome == 0) {
        var after: sys.UserRegs = undefined;
        outcome = ck_get_regs(pid, &after);
        result.* = @bitCast(after.rax);
    }
    if (copy) |c| {
        c.* = child;
        if (child > 0) {
            var st: i32 = 0;
            const w = ck_wait(child, sys.WALL, &st);
            if (outcome == 0 and w < 0) outcome = w;
            const p = ck_poke_word(child, addr, saved_word);
            if (outcome == 0 and p < 0) outcome = p;
        } else if (outcome == 0) outcome = -5;
    }
    // Put everything back even if the call failed half-way.
    const r1 = ck_poke_word(pid, addr, saved_word);
    const r2 = ck_set_regs(pid, &saved);
    const r3 = ck_set_sigmask(pid, saved_mask);
    if (outcome != 0) return outcome;
    if (r1 < 0) return r1;
    if (r2 < 0) return r2;
    if (r3 < 0) return r3;
    // With its own mask back: a ckpt killed while parking must not leave the
    // task deaf to signals. The kernel takes the pending interrupt trap
    // before it dequeues any signal, so none is delivered meanwhile.
    return parkInEventStop(pid);
}

/// The int3 left the task in a SIGTRAP signal-delivery stop. Should ckpt die
/// now, the kernel would deliver that SIGTRAP and kill the task; an
/// interrupt stop carries no signal. Interrupt, then resume from the trap:
/// the pending interrupt stops it again before any of its own code runs.
fn parkInEventStop(pid: i32) i64 {
    var rc = ck_ptrace_interrupt(pid);
    // EIO: traced with TRACEME (a restored task), which ckpt detaches next.
    if (rc == -5) return 0;
    if (rc < 0) return rc;
    rc = ck_ptrace_cont(pid, 0);
    if (rc < 0) return rc;
    while (true) {
        var status: i32 = 0;
        rc = ck_wait(pid, sys.WALL, &status);
        if (rc < 0) return rc;
        const st: u32 = @bitCast(status);
        if ((st & 0xff) != 0x7f) return -3;
        if ((st >> 16) == PTRACE_EVENT_STOP) return 0;
        // Not expected (the trap comes first); pass the signal on rather
        // than lose it.
        rc = ck_ptrace_cont(pid, @intCast((st >> 8) & 0xff));
        if (rc < 0) return rc;
    }
}

fn runToTrap(pid: i32, child: *i32) i64 {
    var rc = ck_ptrace_cont(pid, 0);
    if (rc < 0) return rc;
    while (true) {
        var status: i32 = 0;
        rc = ck_wait(pid, sys.WALL, &status);
        if (rc < 0) return rc;
        const st: u32 = @bitCast(status);
        if ((st & 0xff) != 0x7f) return -3; // ESRCH: it exited or was killed
        const sig = (st >> 8) & 0xff;
        const event = st >> 16;
        if (sig == sys.SIGTRAP and event == 0) return 0;
        if (sig == sys.SIGTRAP and event == PTRACE_EVENT_CLONE) {
            var msg: u64 = 0;
            rc = ck_ptrace_geteventmsg(pid, &msg);
            if (rc < 0) return rc;
            child.* = @intCast(msg);
            rc = ck_ptrace_cont(pid, 0);
            if (rc < 0) return rc;
            continue;
        }
        // A group-stop or interrupt arrived meanwhile: keep it running.
        if (event == PTRACE_EVENT_STOP) {
            rc = ck_ptrace_cont(pid, 0);
            if (rc < 0) return rc;
            continue;
        }
        return -5; // EIO: an unexpected signal stopped the injected call
    }
}
