//! Raw descriptor operations. Deno's own file API hides descriptor numbers,
//! while dump and restore need real ones (to copy a tracee's fd, to hand files
//! to the restored task), so these thin wrappers return plain fds or -errno.
const sys = @import("sys.zig");
const NR = sys.NR;

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

export fn ck_open(path: [*:0]const u8, flags: i32, mode: u32) i64 {
    return ret(sys.syscall4(NR.openat, sys.int(@as(i32, -100)), sys.ptr(path), sys.int(flags), mode));
}

export fn ck_close(fd: i32) i64 {
    return ret(sys.syscall1(NR.close, sys.int(fd)));
}

/// Closes fds[0..n]: once a restored tree runs, ckpt lets go of every
/// descriptor it made for it (ten thousand, for a server) in one call.
export fn ck_close_many(fds: [*]const i32, n: usize) void {
    for (fds[0..n]) |fd| _ = sys.syscall1(NR.close, sys.int(fd));
}

export fn ck_read(fd: i32, buf: [*]u8, len: usize) i64 {
    return ret(sys.syscall3(NR.read, sys.int(fd), sys.ptr(buf), len));
}

export fn ck_write(fd: i32, buf: [*]const u8, len: usize) i64 {
    return ret(sys.syscall3(NR.write, sys.int(fd), sys.ptr(buf), len));
}

export fn ck_pread(fd: i32, buf: [*]u8, len: usize, off: u64) i64 {
    return ret(sys.syscall4(NR.pread64, sys.int(fd), sys.ptr(buf), len, off));
}

export fn ck_lseek(fd: i32, off: i64, whence: i32) i64 {
    return ret(sys.syscall3(NR.lseek, sys.int(fd), @bitCast(off), sys.int(whence)));
}

export fn ck_fcntl(fd: i32, cmd: i32, arg: u64) i64 {
    return ret(sys.syscall3(NR.fcntl, sys.int(fd), sys.int(cmd), arg));
}

export fn ck_dup(fd: i32) i64 {
    return ret(sys.syscall1(NR.dup, sys.int(fd)));
}

/// pipe2; the two ends are written to out[0] (read) and out[1] (write).
export fn ck_pipe(out: *[2]i32, flags: i32) i64 {
    return ret(sys.syscall2(NR.pipe2, sys.ptr(out), sys.int(flags)));
}

export fn ck_tee(fd_in: i32, fd_out: i32, len: usize, flags: u32) i64 {
    return ret(sys.syscall4(NR.tee, sys.int(fd_in), sys.int(fd_out), len, flags));
}

/// revents of fd for `events`, without waiting.
export fn ck_poll1(fd: i32, events: u32) i64 {
    var p = extern struct { fd: i32, events: i16, revents: i16 }{ .fd = fd, .events = @intCast(events), .revents = 0 };
    const rc = sys.syscall3(NR.poll, sys.ptr(&p), 1, 0);
    if (sys.isErr(rc)) return ret(rc);
    return @as(u16, @bitCast(p.revents));
}

export fn ck_eventfd(count: u32, flags: i32) i64 {
    return ret(sys.syscall2(NR.eventfd2, count, sys.int(flags)));
}

export fn ck_memfd_create(name: [*:0]const u8, flags: u32) i64 {
    return ret(sys.syscall2(NR.memfd_create, sys.ptr(name), flags));
}

export fn ck_ftruncate(fd: i32, len: u64) i64 {
    return ret(sys.syscall2(NR.ftruncate, sys.int(fd), len));
}

export fn ck_ioctl(fd: i32, req: u64, arg: u64) i64 {
    return ret(sys.syscall3(NR.ioctl, sys.int(fd), req, arg));
}

export fn ck_pidfd_open(pid: i32, flags: u32) i64 {
    return ret(sys.syscall2(NR.pidfd_open, sys.int(pid), flags));
}

/// A copy of descriptor `fd` of the process behind pidfd (needs ptrace rights).
export fn ck_pidfd_getfd(pidfd: i32, fd: i32, flags: u32) i64 {
    return ret(sys.syscall3(NR.pidfd_getfd, sys.int(pidfd), sys.int(fd), flags));
}

export fn ck_kill(pid: i32, sig: i32) i64 {
    return ret(sys.syscall2(NR.kill, sys.int(pid), sys.int(sig)));
}

export fn ck_getsockopt(fd: i32, level: i32, name: i32, val: [*]u8, len: *u32) i64 {
    return ret(sys.syscall5(NR.getsockopt, sys.int(fd), sys.int(level), sys.int(name), sys.ptr(val), sys.ptr(len)));
}

export fn ck_setsockopt(fd: i32, level: i32, name: i32, val: [*]const u8, len: u32) i64 {
    return ret(sys.syscall5(NR.setsockopt, sys.int(fd), sys.int(level), sys.int(name), sys.ptr(val), len));
}

export fn ck_socket(domain: i32, kind: i32, proto: i32) i64 {
    return ret(sys.syscall3(NR.socket, sys.int(domain), sys.int(kind), sys.int(proto)));
}

export fn ck_sendmsg(fd: i32, msg: *const anyopaque, flags: i32) i64 {
    return ret(sys.syscall3(NR.sendmsg, sys.int(fd), sys.ptr(msg), sys.int(flags)));
}

export fn ck_recvmsg(fd: i32, msg: *anyopaque, flags: i32) i64 {
    return ret(sys.syscall3(NR.recvmsg, sys.int(fd), sys.ptr(msg), sys.int(flags)));
}

/// kcmp(2): 0 when both refer to the same kernel object (KCMP_FILE = 0: the
/// same open file description), 1/2 ordering otherwise.
export fn ck_kcmp(pid1: i32, pid2: i32, kind: i32, idx1: u64, idx2: u64) i64 {
    return ret(sys.syscall5(312, sys.int(pid1), sys.int(pid2), sys.int(kind), idx1, idx2));
}

// Numbers kept here rather than in sys.zig: only ckpt itself (never the
// restorer) needs them.
const nr_flock = 73;
const nr_unlinkat = 263;
const nr_openat2 = 437;

/// flock(2); op is LOCK_SH/LOCK_EX (| LOCK_NB) or LOCK_UN.
export fn ck_flock(fd: i32, op: i32) i64 {
    return ret(sys.syscall2(nr_flock, sys.int(fd), sys.int(op)));
}

const OpenHow = extern struct { flags: u64, mode: u64, resolve: u64 };

/// openat2(2): resolve carries RESOLVE_* bits (e.g. RESOLVE_NO_SYMLINKS), so a
/// path from an image cannot be redirected through a planted symlink.
export fn ck_openat2(dirfd: i32, path: [*:0]const u8, flags: u64, mode: u64, resolve: u64) i64 {
    const how = OpenHow{ .flags = flags, .mode = mode, .resolve = resolve };
    return ret(sys.syscall4(nr_openat2, sys.int(dirfd), sys.ptr(path), sys.ptr(&how), @sizeOf(OpenHow)));
}

export fn ck_unlinkat(dirfd: i32, path: [*:0]const u8, flags: i32) i64 {
    return ret(sys.syscall3(nr_unlinkat, sys.int(dirfd), sys.ptr(path), sys.int(flags)));
}

const nr_fchmod = 91;
const nr_fchown = 93;
const nr_fstatfs = 138;

export fn ck_pwrite(fd: i32, buf: [*]const u8, len: usize, off: u64) i64 {
    return ret(sys.syscall4(NR.pwrite64, sys.int(fd), sys.ptr(buf), len, off));
}

/// fstatfs(2): out[0] is f_type (TMPFS_MAGIC, HUGETLBFS_MAGIC…), out[1] f_bsize.
export fn ck_fstatfs(fd: i32, out: *[2]u64) i64 {
    var st: [15]u64 = undefined; // struct statfs on x86_64: 120 bytes
    const rc = sys.syscall2(nr_fstatfs, sys.int(fd), sys.ptr(&st));
    if (sys.isErr(rc)) return ret(rc);
    out[0] = st[0];
    out[1] = st[1];
    return 0;
}

// Path operations relative to a directory fd, for restoring files with the
// task's authority without a second lookup of a path someone could swap.
const nr_fstat = 5;
const nr_fchownat = 260;
const nr_newfstatat = 262;
const nr_readlinkat = 267;
const nr_faccessat2 = 439;
const nr_fchmodat2 = 452;

/// struct stat (144 bytes on x86_64) of fd.
export fn ck_fstat(fd: i32, out: [*]u8) i64 {
    return ret(sys.syscall2(nr_fstat, sys.int(fd), sys.ptr(out)));
}

export fn ck_fstatat(dirfd: i32, path: [*:0]const u8, out: [*]u8, flags: i32) i64 {
    return ret(sys.syscall4(nr_newfstatat, sys.int(dirfd), sys.ptr(path), sys.ptr(out), sys.int(flags)));
}

export fn ck_fchownat(dirfd: i32, path: [*:0]const u8, uid: u32, gid: u32, flags: i32) i64 {
    return ret(sys.syscall5(nr_fchownat, sys.int(dirfd), sys.ptr(path), uid, gid, sys.int(flags)));
}

export fn ck_fchmod(fd: i32, mode: u32) i64 {
    return ret(sys.syscall2(nr_fchmod, sys.int(fd), mode));
}

export fn ck_fchown(fd: i32, uid: u32, gid: u32) i64 {
    return ret(sys.syscall3(nr_fchown, sys.int(fd), uid, gid));
}

/// fchmodat2 (Linux 6.6): takes AT_EMPTY_PATH, so an O_PATH fd of a socket
/// file can be given its mode without naming it again.
export fn ck_fchmodat2(dirfd: i32, path: [*:0]const u8, mode: u32, flags: i32) i64 {
    return ret(sys.syscall4(nr_fchmodat2, sys.int(dirfd), sys.ptr(path), mode, sys.int(flags)));
}

export fn ck_faccessat2(dirfd: i32, path: [*:0]const u8, mode: i32, flags: i32) i64 {
    return ret(sys.syscall4(nr_faccessat2, sys.int(dirfd), sys.ptr(path), sys.int(mode), sys.int(flags)));
}

export fn ck_readlinkat(dirfd: i32, path: [*:0]const u8, buf: [*]u8, len: usize) i64 {
    return ret(sys.syscall4(nr_readlinkat, sys.int(dirfd), sys.ptr(path), sys.ptr(buf), len));
}

const nr_statx = 332;

/// statx(2) into a 256-byte struct statx.
export fn ck_statx(dirfd: i32, path: [*:0]const u8, flags: i32, mask: u32, out: [*]u8) i64 {
    return ret(sys.syscall5(nr_statx, sys.int(dirfd), sys.ptr(path), sys.int(flags), mask, sys.ptr(out)));
}
