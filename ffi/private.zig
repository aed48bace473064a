//! A private place for objects whose path is gone (src/files/private_place.ts):
//! a tmpfs mounted nowhere, the directories made in it by fd, a socket bound
//! there by a forked helper whose root is that tmpfs (bind(2) takes a string,
//! looked up from the caller's root), and pids held for a moment so that a
//! message can carry a sender's pid as its credentials.
const sys = @import("sys.zig");
const NR = sys.NR;

const NR_mkdirat = 258;
const NR_mknodat = 259;
const NR_fsopen = 430;
const NR_fsconfig = 431;
const NR_fsmount = 432;
const FSOPEN_CLOEXEC = 1;
const FSMOUNT_CLOEXEC = 1;
const FSCONFIG_SET_STRING = 1;
const FSCONFIG_CMD_CREATE = 6;
const MOUNT_ATTR_NOSUID = 0x2;
const MOUNT_ATTR_NODEV = 0x4;
const MOUNT_ATTR_NOEXEC = 0x8;
const ECHILD = 10;
const EIO = 5;

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

/// A new tmpfs, mounted nowhere (fsopen + fsmount give a detached mount: no
/// path of any mount namespace reaches it); returns an fd of its root.
export fn ck_private_root() i64 {
    const fs = sys.syscall2(NR_fsopen, sys.ptr("tmpfs"), FSOPEN_CLOEXEC);
    if (sys.isErr(fs)) return ret(fs);
    defer _ = sys.syscall1(NR.close, fs);
    var rc = sys.syscall5(NR_fsconfig, fs, FSCONFIG_SET_STRING, sys.ptr("mode"), sys.ptr("0700"), 0);
    if (!sys.isErr(rc)) rc = sys.syscall5(NR_fsconfig, fs, FSCONFIG_CMD_CREATE, 0, 0, 0);
    if (sys.isErr(rc)) return ret(rc);
    return ret(sys.syscall3(NR_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC));
}

export fn ck_mkdirat(dirfd: i32, name: [*:0]const u8, mode: u32) i64 {
    return ret(sys.syscall3(NR_mkdirat, sys.int(dirfd), sys.ptr(name), mode));
}

export fn ck_mknodat(dirfd: i32, name: [*:0]const u8, mode: u32, dev: u64) i64 {
    return ret(sys.syscall4(NR_mknodat, sys.int(dirfd), sys.ptr(name), mode, dev));
}

/// Binds socket fd to addr as seen from root_fd: a forked helper (a copy of
/// ckpt's fd table, so the very socket) takes root_fd as its root and cwd
/// and binds; the name is the string given, the file is made below root_fd.
/// Returns 0 or -errno (of the step that failed).
export fn ck_bind_in(root_fd: i32, fd: i32, addr: [*]const u8, len: u32) i64 {
    var args = sys.CloneArgs{ .exit_signal = 0 };
    const pid = sys.syscall2(NR.clone3, sys.ptr(&args), @sizeOf(sys.CloneArgs));
    if (sys.isErr(pid)) return ret(pid);
    if (pid == 0) {
        // A fork of a multi-threaded runtime: raw system calls only.
        var rc = sys.syscall1(NR.fchdir, sys.int(root_fd));
        if (!sys.isErr(rc)) rc = sys.syscall1(NR.chroot, sys.ptr("."));
        if (!sys.isErr(rc)) rc = sys.syscall3(NR.bind, sys.int(fd), sys.ptr(addr), len);
        const code: usize = if (sys.isErr(rc)) @intCast(-sys.signed(rc)) else 0;
        while (true) _ = sys.syscall1(NR.exit_group, code);
    }
    return reap(pid);
}

fn reap(pid: usize) i64 {
    var status: u32 = 0;
    while (true) {
        const w = sys.syscall4(NR.wait4, pid, sys.ptr(&status), sys.WALL, 0);
        if (sys.signed(w) == -4) continue; // EINTR
        if (sys.isErr(w)) return ret(w);
        if (w != pid) return -ECHILD;
        break;
    }
    if (status & 0x7f != 0) return -EIO;
    return -@as(i64, (status >> 8) & 0xff);
}

/// Makes pid exist for a moment: a child forked with exactly that pid
/// (clone3 set_tid) exits at once and stays a zombie, unreaped, until
/// ck_pid_release; while it is, the pid can be named in SCM_CREDENTIALS.
/// Returns the pid, -EEXIST when it is taken, or another -errno.
export fn ck_pid_hold(pid: i32) i64 {
    var want: i32 = pid;
    var args = sys.CloneArgs{ .exit_signal = 0, .set_tid = sys.ptr(&want), .set_tid_size = 1 };
    const rc = sys.syscall2(NR.clone3, sys.ptr(&args), @sizeOf(sys.CloneArgs));
    if (sys.isErr(rc)) return ret(rc);
    if (rc == 0) {
        while (true) _ = sys.syscall1(NR.exit_group, 0);
    }
    return @intCast(rc);
}

/// Reaps a child of ck_pid_hold (its pid is free again afterwards).
export fn ck_pid_release(pid: i32) i64 {
    const rc = reap(@intCast(pid));
    return if (rc < 0) rc else pid;
}
