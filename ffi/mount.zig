//! Mounts, native half: a clone of a mount from another mount namespace (a
//! forked child of ckpt enters it — a multi-threaded process cannot — and
//! sends back what open_tree(OPEN_TREE_CLONE) gives it: a detached copy that
//! shows the filesystem without whatever is mounted over parts of it), and
//! the path calls that save and remake a tmpfs's files: mknodat, mkdirat,
//! symlinkat, linkat, utimensat and the l*xattr family.
const sys = @import("sys.zig");
const NR = sys.NR;

const NR_socketpair = 53;
const NR_linkat = 265;
const NR_symlinkat = 266;
const NR_utimensat = 280;
const NR_lsetxattr = 189;
const NR_lgetxattr = 192;
const NR_llistxattr = 195;
const NR_open_tree = 428;

const AF_UNIX = 1;
const SOCK_SEQPACKET = 5;
const SOCK_CLOEXEC = 0o2000000;
const CLONE_NEWNS = 0x20000;
const OPEN_TREE_CLONE = 1;
const AT_RECURSIVE = 0x8000;
const AT_FDCWD: i32 = -100;
const MSG_CMSG_CLOEXEC = 0x40000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

const Msghdr = extern struct {
    name: usize = 0,
    namelen: u32 = 0,
    _pad: u32 = 0,
    iov: usize,
    iovlen: usize,
    control: usize,
    controllen: usize,
    flags: i32 = 0,
    _pad2: u32 = 0,
};

/// A detached clone of the mount at `path` in the mount namespace `nsfd`
/// (an fd of /proc/PID/ns/mnt), as an fd of ckpt's (O_CLOEXEC). With
/// `recursive`, the mounts below it come along. -errno on failure; a failure
/// inside the child is -(step << 16 | errno).
export fn ck_mntns_clone(nsfd: i32, path: [*:0]const u8, recursive: u32) i64 {
    var sv: [2]i32 = .{ -1, -1 };
    const sp = sys.syscall4(NR_socketpair, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sys.ptr(&sv));
    if (sys.isErr(sp)) return ret(sp);
    defer _ = sys.syscall1(NR.close, sys.int(sv[0]));
    const pid = sys.syscall2(NR.clone3, sys.ptr(&sys.CloneArgs{ .exit_signal = sys.SIGCHLD }), @sizeOf(sys.CloneArgs));
    if (sys.isErr(pid)) {
        _ = sys.syscall1(NR.close, sys.int(sv[1]));
        return ret(pid);
    }
    if (pid == 0) {
        var code: usize = 0;
        const in = sys.syscall2(NR.setns, sys.int(nsfd), CLONE_NEWNS);
        if (sys.isErr(in)) {
            code = 1 * 32 + errClass(in);
        } else {
            const flags: usize = OPEN_TREE_CLONE | sys.O_CLOEXEC | (if (recursive != 0) @as(usize, AT_RECURSIVE) else 0);
            const t = sys.syscall3(NR_open_tree, sys.int(AT_FDCWD), sys.ptr(path), flags);
            if (sys.isErr(t)) {
                code = 2 * 32 + errClass(t);
            } else {
                const s = sendFd(sv[1], @intCast(t));
                if (sys.isErr(s)) code = 3 * 32 + errClass(s);
            }
        }
        while (true) _ = sys.syscall1(NR.exit_group, code);
    }
    _ = sys.syscall1(NR.close, sys.int(sv[1]));
    var fd: i64 = -1;
    var control: [24]u8 align(8) = undefined;
    var byte: u8 = 0;
    var iov = sys.Iovec{ .base = sys.ptr(&byte), .len = 1 };
    var msg = Msghdr{ .iov = sys.ptr(&iov), .iovlen = 1, .control = sys.ptr(&control), .controllen = control.len };
    const got = sys.syscall3(NR.recvmsg, sys.int(sv[0]), sys.ptr(&msg), MSG_CMSG_CLOEXEC);
    if (!sys.isErr(got) and got == 1 and msg.controllen >= 20) {
        const hdr: *const extern struct { len: u64, level: i32, type: i32 } = @ptrCast(&control);
        if (hdr.level == SOL_SOCKET and hdr.type == SCM_RIGHTS) {
            const p: *const i32 = @ptrCast(@alignCast(&control[16]));
            fd = p.*;
        }
    }
    var status: i32 = 0;
    while (true) {
        const w = sys.syscall4(NR.wait4, pid, sys.ptr(&status), sys.WALL, 0);
        if (sys.signed(w) == -4) continue;
        break;
    }
    const st: u32 = @bitCast(status);
    const code = (st >> 8) & 0xff;
    if (fd >= 0) return fd;
    if (st & 0x7f != 0) return -(0xff << 16);
    if (code == 0) return -71; // EPROTO: nothing came
    return -@as(i64, @intCast(((code >> 5) << 16) | (code & 31)));
}

fn sendFd(sock: i32, fd: i32) usize {
    var control: [24]u8 align(8) = undefined;
    const hdr: *extern struct { len: u64, level: i32, type: i32 } = @ptrCast(&control);
    hdr.* = .{ .len = 20, .level = SOL_SOCKET, .type = SCM_RIGHTS };
    const p: *i32 = @ptrCast(@alignCast(&control[16]));
    p.* = fd;
    var byte: u8 = 1;
    var iov = sys.Iovec{ .base = sys.ptr(&byte), .len = 1 };
    var msg = Msghdr{ .iov = sys.ptr(&iov), .iovlen = 1, .control = sys.ptr(&control), .controllen = control.len };
    return sys.syscall3(NR.sendmsg, sys.int(sock), sys.ptr(&msg), 0);
}

fn errClass(rc: usize) usize {
    const e: usize = @intCast(-sys.signed(rc));
    return @min(e, 31);
}

export fn ck_symlinkat(target: [*:0]const u8, dirfd: i32, path: [*:0]const u8) i64 {
    return ret(sys.syscall3(NR_symlinkat, sys.ptr(target), sys.int(dirfd), sys.ptr(path)));
}

export fn ck_linkat(olddir: i32, old: [*:0]const u8, newdir: i32, new: [*:0]const u8, flags: i32) i64 {
    return ret(sys.syscall5(NR_linkat, sys.int(olddir), sys.ptr(old), sys.int(newdir), sys.ptr(new), sys.int(flags)));
}

/// times: atime sec, nsec, mtime sec, nsec.
export fn ck_utimensat(dirfd: i32, path: [*:0]const u8, times: *const [4]i64, flags: i32) i64 {
    return ret(sys.syscall4(NR_utimensat, sys.int(dirfd), sys.ptr(path), sys.ptr(times), sys.int(flags)));
}

export fn ck_llistxattr(path: [*:0]const u8, buf: [*]u8, len: usize) i64 {
    return ret(sys.syscall3(NR_llistxattr, sys.ptr(path), sys.ptr(buf), len));
}

export fn ck_lgetxattr(path: [*:0]const u8, name: [*:0]const u8, buf: [*]u8, len: usize) i64 {
    return ret(sys.syscall4(NR_lgetxattr, sys.ptr(path), sys.ptr(name), sys.ptr(buf), len));
}

export fn ck_lsetxattr(path: [*:0]const u8, name: [*:0]const u8, val: [*]const u8, len: usize, flags: i32) i64 {
    return ret(sys.syscall5(NR_lsetxattr, sys.ptr(path), sys.ptr(name), sys.ptr(val), len, sys.int(flags)));
}
