//! Terminal helpers: ioctls that take a pointer, waiting for a descriptor,
//! putting bytes back into a line discipline (TIOCSTI), and opening /dev/tty
//! for a terminal ckpt is not controlled by (a forked helper takes it as its
//! controlling terminal, opens /dev/tty into ckpt's fd table and lets go).
const sys = @import("sys.zig");
const NR = sys.NR;

const TIOCSTI: usize = 0x5412;
const TIOCSCTTY: usize = 0x540E;
const TIOCNOTTY: usize = 0x5422;
const CLONE_FILES: u64 = 0x400;
const WALL: usize = 0x40000000;
const F_DUPFD_CLOEXEC: usize = 1030;

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

/// ioctl(2) whose argument points to `buf`.
export fn ck_ioctl_ptr(fd: i32, req: u64, buf: [*]u8) i64 {
    return ret(sys.syscall3(NR.ioctl, sys.int(fd), req, sys.ptr(buf)));
}

/// poll(2) of one fd for `events`, waiting up to `ms`: its revents (0: none).
export fn ck_poll_wait(fd: i32, events: u32, ms: i32) i64 {
    var p = extern struct { fd: i32, events: i16, revents: i16 }{ .fd = fd, .events = @intCast(events), .revents = 0 };
    const rc = sys.syscall3(NR.poll, sys.ptr(&p), 1, sys.int(ms));
    if (sys.isErr(rc)) return ret(rc);
    return @as(u16, @bitCast(p.revents));
}

/// Feeds `len` bytes to the line discipline of the terminal behind fd as if
/// they had arrived from its other side (TIOCSTI, one byte per call; needs
/// CAP_SYS_ADMIN for a terminal that is not the caller's). Returns the count.
export fn ck_tty_inject(fd: i32, buf: [*]const u8, len: usize) i64 {
    var i: usize = 0;
    while (i < len) : (i += 1) {
        const rc = sys.syscall3(NR.ioctl, sys.int(fd), TIOCSTI, sys.ptr(&buf[i]));
        if (sys.isErr(rc)) return ret(rc);
    }
    return @intCast(len);
}

/// A new open of `path` (/dev/tty) that refers to the terminal behind
/// tty_fd, which must be nobody's controlling terminal: a forked helper
/// sharing ckpt's fd table starts a session, takes the terminal
/// (TIOCSCTTY), opens the path in its place, and gives the terminal up
/// again (TIOCNOTTY: no hangup) before it exits. Returns the new fd.
export fn ck_tty_open_ctty(tty_fd: i32, path: [*:0]const u8, flags: i32) i64 {
    // The helper's open lands on a number reserved here, so it is known.
    const slot = sys.syscall3(NR.fcntl, sys.int(tty_fd), F_DUPFD_CLOEXEC, 100);
    if (sys.isErr(slot)) return ret(slot);
    var args = sys.CloneArgs{ .flags = CLONE_FILES, .exit_signal = 0 };
    const pid = sys.syscall2(NR.clone3, sys.ptr(&args), @sizeOf(sys.CloneArgs));
    if (sys.isErr(pid)) {
        _ = sys.syscall1(NR.close, slot);
        return ret(pid);
    }
    if (pid == 0) helper(tty_fd, path, flags, slot);
    var status: u32 = 0;
    const rc = sys.syscall4(NR.wait4, pid, sys.ptr(&status), WALL, 0);
    if (sys.isErr(rc)) {
        _ = sys.syscall1(NR.close, slot);
        return ret(rc);
    }
    const code = (status >> 8) & 0xff;
    if (status & 0x7f != 0 or code != 0) {
        _ = sys.syscall1(NR.close, slot);
        return -@as(i64, if (code != 0) code else 5); // EIO when killed
    }
    return @intCast(slot);
}

/// In the helper (a fork of ckpt: raw system calls only). Exits with the
/// errno of the step that failed, 0 once `slot` holds the new open.
fn helper(tty_fd: i32, path: [*:0]const u8, flags: i32, slot: usize) noreturn {
    // TIOCNOTTY sends SIGHUP and SIGCONT to the helper's own group.
    const all: u64 = ~@as(u64, 0);
    _ = sys.syscall4(NR.rt_sigprocmask, 2, sys.ptr(&all), 0, 8);
    var rc = sys.syscall0(NR.setsid);
    if (!sys.isErr(rc)) rc = sys.syscall3(NR.ioctl, sys.int(tty_fd), TIOCSCTTY, 0);
    if (!sys.isErr(rc)) {
        const fd = sys.syscall4(NR.openat, sys.int(@as(i32, -100)), sys.ptr(path), sys.int(flags | sys.O_CLOEXEC), 0);
        rc = fd;
        if (!sys.isErr(fd)) {
            rc = sys.syscall2(NR.ioctl, fd, TIOCNOTTY);
            if (!sys.isErr(rc)) rc = sys.syscall3(NR.dup3, fd, slot, sys.O_CLOEXEC);
            _ = sys.syscall1(NR.close, fd);
        }
    }
    const code: usize = if (sys.isErr(rc)) @intCast(-sys.signed(rc)) else 0;
    while (true) _ = sys.syscall1(NR.exit_group, code);
}
