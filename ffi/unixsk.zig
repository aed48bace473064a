//! AF_UNIX socket calls for dump (peeking a task's queues) and restore
//! (rebuilding sockets inside ckpt). Which socket is whose peer and what the
//! options allow is decided in TypeScript (src/unix/); this file only builds
//! msghdr/cmsg structures, which are awkward to lay out from Deno.
const sys = @import("sys.zig");

const NR_connect = 42;
const NR_sendmsg = 46;
const NR_recvmsg = 47;
const NR_shutdown = 48;
const NR_bind = 49;
const NR_listen = 50;
const NR_getsockname = 51;
const NR_getpeername = 52;
const NR_socketpair = 53;
const NR_accept4 = 288;

const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SCM_CREDENTIALS = 2;
/// Room for the SCM_RIGHTS of one message: the kernel caps it at 253 fds.
const MAX_FDS = 253;

const IoVec = extern struct { base: usize, len: usize };

const MsgHdr = extern struct {
    name: usize,
    namelen: u32,
    iov: *const IoVec,
    iovlen: usize,
    control: usize,
    controllen: usize,
    flags: i32,
};

const CmsgHdr = extern struct { len: usize, level: i32, kind: i32 };

const Control = extern struct {
    hdr: CmsgHdr,
    fds: [MAX_FDS]i32,
};

/// Room for SCM_CREDENTIALS and then SCM_RIGHTS.
const SendControl = extern struct {
    creds: [@sizeOf(CmsgHdr) + 16]u8 align(8),
    rights: Control,
};

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

/// socketpair(2); the two ends are written to out[0] and out[1].
export fn ck_socketpair(domain: i32, kind: i32, proto: i32, out: *[2]i32) i64 {
    return ret(sys.syscall4(NR_socketpair, sys.int(domain), sys.int(kind), sys.int(proto), sys.ptr(out)));
}

export fn ck_bind(fd: i32, addr: [*]const u8, len: u32) i64 {
    return ret(sys.syscall3(NR_bind, sys.int(fd), sys.ptr(addr), len));
}

export fn ck_listen(fd: i32, backlog: i32) i64 {
    return ret(sys.syscall2(NR_listen, sys.int(fd), sys.int(backlog)));
}

/// accept4(2) without the peer's address (SO_PEERCRED says who it is).
export fn ck_accept(fd: i32, flags: i32) i64 {
    return ret(sys.syscall4(NR_accept4, sys.int(fd), 0, 0, sys.int(flags)));
}

export fn ck_connect(fd: i32, addr: [*]const u8, len: u32) i64 {
    return ret(sys.syscall3(NR_connect, sys.int(fd), sys.ptr(addr), len));
}

export fn ck_shutdown(fd: i32, how: i32) i64 {
    return ret(sys.syscall2(NR_shutdown, sys.int(fd), sys.int(how)));
}

/// getsockname (peer == 0) or getpeername (peer != 0); len is in/out.
export fn ck_sockname(fd: i32, peer: i32, addr: [*]u8, len: *u32) i64 {
    const nr: usize = if (peer != 0) NR_getpeername else NR_getsockname;
    return ret(sys.syscall3(nr, sys.int(fd), sys.ptr(addr), sys.ptr(len)));
}

/// One sendmsg: `len` bytes, to `addr` when addrlen > 0, with `nfds`
/// descriptors as SCM_RIGHTS when nfds > 0, and with `creds` (pid, uid,
/// gid) as SCM_CREDENTIALS when it is not null — the sender's credentials
/// the message is to carry instead of ckpt's.
export fn ck_unix_send(fd: i32, data: [*]const u8, len: usize, addr: [*]const u8, addrlen: u32, fds: [*]const i32, nfds: u32, flags: i32, creds: ?*const [3]i32) i64 {
    if (nfds > MAX_FDS) return -22;
    const iov = IoVec{ .base = sys.ptr(data), .len = len };
    var ctl: SendControl = undefined;
    var msg = MsgHdr{
        .name = if (addrlen > 0) sys.ptr(addr) else 0,
        .namelen = addrlen,
        .iov = &iov,
        .iovlen = 1,
        .control = 0,
        .controllen = 0,
        .flags = 0,
    };
    var off: usize = 0;
    const base: [*]u8 = @ptrCast(&ctl);
    if (creds) |c| {
        const h: *align(1) CmsgHdr = @ptrCast(base);
        h.* = .{ .len = @sizeOf(CmsgHdr) + 12, .level = SOL_SOCKET, .kind = SCM_CREDENTIALS };
        const body: [*]align(1) i32 = @ptrCast(base + @sizeOf(CmsgHdr));
        for (0..3) |i| body[i] = c[i];
        off = (h.len + 7) & ~@as(usize, 7);
    }
    if (nfds > 0) {
        const h: *align(1) CmsgHdr = @ptrCast(base + off);
        h.* = .{ .len = @sizeOf(CmsgHdr) + 4 * @as(usize, nfds), .level = SOL_SOCKET, .kind = SCM_RIGHTS };
        const body: [*]align(1) i32 = @ptrCast(base + off + @sizeOf(CmsgHdr));
        for (0..nfds) |i| body[i] = fds[i];
        off += (h.len + 7) & ~@as(usize, 7);
    }
    if (off > 0) {
        msg.control = sys.ptr(&ctl);
        msg.controllen = off;
    }
    return ret(sys.syscall3(NR_sendmsg, sys.int(fd), sys.ptr(&msg), sys.int(flags)));
}

/// One recvmsg (usually MSG_PEEK|MSG_DONTWAIT|MSG_CMSG_CLOEXEC): data into
/// buf, the sender's address into addr (addrlen in/out), received descriptors
/// into fds (nfds out, at most MAX_FDS), msg_flags into out_flags, and the
/// SCM_CREDENTIALS (SO_PASSCRED set) into creds: 1, pid, uid, gid (0 first
/// when there were none).
export fn ck_unix_recv(fd: i32, buf: [*]u8, len: usize, addr: [*]u8, addrlen: *u32, fds: [*]i32, nfds: *u32, flags: i32, out_flags: *i32, creds: *[4]i32) i64 {
    const iov = IoVec{ .base = sys.ptr(buf), .len = len };
    var ctl: SendControl = undefined;
    creds[0] = 0;
    var msg = MsgHdr{
        .name = sys.ptr(addr),
        .namelen = addrlen.*,
        .iov = &iov,
        .iovlen = 1,
        .control = sys.ptr(&ctl),
        .controllen = @sizeOf(SendControl),
        .flags = 0,
    };
    const rc = sys.syscall3(NR_recvmsg, sys.int(fd), sys.ptr(&msg), sys.int(flags));
    nfds.* = 0;
    if (sys.isErr(rc)) return ret(rc);
    addrlen.* = msg.namelen;
    out_flags.* = msg.flags;
    // Walk every control message: SCM_CREDENTIALS may come before the rights.
    var off: usize = 0;
    const base: [*]const u8 = @ptrCast(&ctl);
    while (off + @sizeOf(CmsgHdr) <= msg.controllen) {
        const h: *align(1) const CmsgHdr = @ptrCast(base + off);
        if (h.len < @sizeOf(CmsgHdr) or off + h.len > msg.controllen) break;
        if (h.level == SOL_SOCKET and h.kind == SCM_RIGHTS) {
            const n = (h.len - @sizeOf(CmsgHdr)) / 4;
            const src: [*]align(1) const i32 = @ptrCast(base + off + @sizeOf(CmsgHdr));
            for (0..n) |i| {
                if (nfds.* < MAX_FDS) {
                    fds[nfds.*] = src[i];
                    nfds.* += 1;
                }
            }
        } else if (h.level == SOL_SOCKET and h.kind == SCM_CREDENTIALS and h.len >= @sizeOf(CmsgHdr) + 12) {
            const src: [*]align(1) const i32 = @ptrCast(base + off + @sizeOf(CmsgHdr));
            creds[0] = 1;
            for (0..3) |i| creds[i + 1] = src[i];
        }
        off += (h.len + 7) & ~@as(usize, 7);
    }
    return ret(rc);
}

const SO_PASSCRED = 16;
const SO_RCVBUF = 8;
const SO_SNDBUF = 7;
const SO_PEEK_OFF = 42;
const NR_pidfd_getfd = 438;

/// What a dump reads of every socket, in one call: out[0] the name's
/// length, out[1..5] SO_PASSCRED, SO_RCVBUF, SO_SNDBUF, SO_PEEK_OFF, then
/// the name (112 bytes). fd is taken from the process behind pidfd (pidfd
/// < 0: fd is ckpt's own); returns ckpt's fd for the socket (the caller
/// closes a copy) or -errno.
export fn ck_unix_describe(pidfd: i32, fd: i32, out: *[5 + 28]u32) i64 {
    var n = fd;
    if (pidfd >= 0) {
        const c = sys.syscall3(NR_pidfd_getfd, sys.int(pidfd), sys.int(fd), 0);
        if (sys.isErr(c)) return ret(c);
        n = @intCast(c);
    }
    const name: [*]u8 = @ptrCast(&out[5]);
    out[0] = 112;
    var rc = sys.syscall3(NR_getsockname, sys.int(n), sys.ptr(name), sys.ptr(&out[0]));
    const opts = [_]i32{ SO_PASSCRED, SO_RCVBUF, SO_SNDBUF, SO_PEEK_OFF };
    for (opts, 1..) |o, k| {
        if (sys.isErr(rc)) break;
        var len: u32 = 4;
        rc = sys.syscall5(sys.NR.getsockopt, sys.int(n), SOL_SOCKET, sys.int(o), sys.ptr(&out[k]), sys.ptr(&len));
    }
    if (sys.isErr(rc)) {
        if (n != fd) _ = sys.syscall1(sys.NR.close, sys.int(n));
        return ret(rc);
    }
    return n;
}

const cred = @import("creds.zig");
const CapData = cred.CapData;

/// connect(fd, addr) (op 0), listen(fd, n) (op 1) or socketpair(AF_UNIX,
/// n, 0, pair) (op 2) with this thread's effective ids set to euid/egid for
/// the call: the kernel stamps a UNIX socket's peer credentials
/// (SO_PEERCRED, seen by the other end) with the caller's, so a socket ckpt
/// makes for a task must not carry root's. Raw setresuid/setresgid act on
/// this thread alone; its effective ids, fsuid/fsgid and capability sets
/// (an asTask switch may be in force) are put back exactly. Returns the
/// call's result; -EPERM (1) in `broke` when the thread could not be put
/// back (the caller must stop).
export fn ck_unix_as(op: u32, fd: i32, addr: [*]const u8, addrlen: u32, n: i32, euid: u32, egid: u32, pair: *[2]i32, broke: *i32) i64 {
    broke.* = 0;
    const keep: usize = ~@as(usize, 0);
    var saved: [2]CapData = undefined;
    var rc = cred.capget(&saved);
    if (sys.isErr(rc)) return ret(rc);
    const old_uid = sys.syscall0(sys.NR.geteuid);
    const old_gid = sys.syscall0(sys.NR.getegid);
    const old_fsuid = cred.current(cred.NR_setfsuid);
    const old_fsgid = cred.current(cred.NR_setfsgid);
    // CAP_SETUID/SETGID may be lowered by an asTask switch: raise the
    // effective set to the permitted one for the switch itself.
    var up = saved;
    for (0..2) |i| up[i].effective = up[i].permitted;
    rc = cred.capset(&up);
    if (sys.isErr(rc)) return ret(rc);
    var out: usize = 0;
    rc = sys.syscall3(sys.NR.setresgid, keep, egid, keep);
    if (!sys.isErr(rc)) {
        rc = sys.syscall3(sys.NR.setresuid, keep, euid, keep);
        if (!sys.isErr(rc)) {
            out = switch (op) {
                0 => sys.syscall3(NR_connect, sys.int(fd), sys.ptr(addr), addrlen),
                1 => sys.syscall2(NR_listen, sys.int(fd), sys.int(n)),
                2 => sys.syscall4(NR_socketpair, 1, sys.int(n), 0, sys.ptr(pair)),
                else => sys.int(@as(isize, -22)),
            };
            // Back to euid 0 the kernel raises the effective set to the
            // permitted one; it is set exactly below.
            if (sys.isErr(sys.syscall3(sys.NR.setresuid, keep, old_uid, keep))) broke.* = 1;
        } else out = rc;
        if (sys.isErr(sys.syscall3(sys.NR.setresgid, keep, old_gid, keep))) broke.* = 1;
    } else out = rc;
    _ = sys.syscall1(cred.NR_setfsuid, old_fsuid);
    _ = sys.syscall1(cred.NR_setfsgid, old_fsgid);
    if (sys.isErr(cred.capset(&saved))) broke.* = 1;
    if (sys.syscall0(sys.NR.geteuid) != old_uid or sys.syscall0(sys.NR.getegid) != old_gid) broke.* = 1;
    if (cred.current(cred.NR_setfsuid) != old_fsuid) broke.* = 1;
    return ret(out);
}

/// What ck_unix_options gives for one socket.
pub const Options = extern struct {
    /// ckpt's copy of the socket when it was asked to be kept, else -1.
    fd: i32,
    /// 0, or the errno that stopped the read.
    err: i32,
    passcred: i32,
    peek_off: i32,
    /// getsockname's address (sun_family first) and its length.
    name_len: u32,
    name: [112]u8,
    _pad: u32 = 0,
};

/// ck_unix_options: keep ckpt's copy open (a queue to read).
pub const KEEP: u8 = 1;
/// ck_unix_options: read the name (sock_diag says there is one).
pub const NAMED: u8 = 2;

/// What a dump reads of each of fds[0..n] of the process behind pidfd that
/// sock_diag does not show (its buffer sizes it does): the name (NAMED),
/// SO_PASSCRED and SO_PEEK_OFF, from a copy of the socket, which is kept
/// open for the caller with KEEP, else closed. One call for every socket
/// of a task: a server has tens of thousands. Returns n; each socket's
/// failure is in its record.
export fn ck_unix_options(pidfd: i32, fds: [*]const i32, flags: [*]const u8, n: usize, out: [*]Options) i64 {
    for (0..n) |i| {
        const rec = &out[i];
        rec.* = .{ .fd = -1, .err = 0, .passcred = 0, .peek_off = -1, .name_len = 0, .name = undefined };
        const c = sys.syscall3(NR_pidfd_getfd, sys.int(pidfd), sys.int(fds[i]), 0);
        if (sys.isErr(c)) {
            rec.err = @truncate(-sys.signed(c));
            continue;
        }
        var rc: usize = 0;
        if (flags[i] & NAMED != 0) {
            rec.name_len = 112;
            rc = sys.syscall3(NR_getsockname, c, sys.ptr(&rec.name), sys.ptr(&rec.name_len));
        }
        const opts = [_]struct { i32, *i32 }{ .{ SO_PASSCRED, &rec.passcred }, .{ SO_PEEK_OFF, &rec.peek_off } };
        for (opts) |o| {
            if (sys.isErr(rc)) break;
            var len: u32 = 4;
            rc = sys.syscall5(sys.NR.getsockopt, c, SOL_SOCKET, sys.int(o[0]), sys.ptr(o[1]), sys.ptr(&len));
        }
        if (sys.isErr(rc)) {
            rec.err = @truncate(-sys.signed(rc));
            _ = sys.syscall1(sys.NR.close, c);
        } else if (flags[i] & KEEP != 0) {
            rec.fd = @intCast(c);
        } else _ = sys.syscall1(sys.NR.close, c);
    }
    return @intCast(n);
}

comptime {
    if (@sizeOf(Options) != 136) @compileError("Options layout changed: update src/native/unixsk.ts");
}

const NR_socket = 41;
const NR_fcntl = 72;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const SOCK_CLOEXEC = 0o2000000;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

/// Makes n sockets in one call: for each kinds[i] (a SOCK_* type, with
/// PAIR added for a socketpair), out[2i] (and out[2i+1] for a pair) get
/// the new fds, O_CLOEXEC. On a failure every socket made here is closed
/// again and -errno returned; else n.
export fn ck_unix_make(kinds: [*]const u32, n: usize, out: [*]i32) i64 {
    for (0..n) |i| {
        const kind = kinds[i];
        const t: usize = (kind & ~PAIR) | SOCK_CLOEXEC;
        var rc: usize = undefined;
        if (kind & PAIR != 0) {
            rc = sys.syscall4(NR_socketpair, sys.AF_UNIX, t, 0, sys.ptr(out + 2 * i));
        } else {
            rc = sys.syscall3(NR_socket, sys.AF_UNIX, t, 0);
            if (!sys.isErr(rc)) {
                out[2 * i] = @intCast(rc);
                out[2 * i + 1] = -1;
            }
        }
        if (sys.isErr(rc)) {
            for (0..i) |k| {
                _ = sys.syscall1(sys.NR.close, sys.int(out[2 * k]));
                if (out[2 * k + 1] >= 0) _ = sys.syscall1(sys.NR.close, sys.int(out[2 * k + 1]));
            }
            return ret(rc);
        }
    }
    return @intCast(n);
}

pub const PAIR: u32 = 0x8000_0000;

/// What ck_unix_set asks of one socket; a field at its "leave" value is
/// left as the socket has it.
pub const Want = extern struct {
    fd: i32,
    /// 1: SO_PASSCRED on; 0: leave.
    passcred: i32,
    /// getsockopt's (doubled) values, set with *BUFFORCE when they differ; 0: leave.
    rcvbuf: i32,
    sndbuf: i32,
    /// SO_PEEK_OFF; -1: leave.
    peek_off: i32,
    /// 1: O_NONBLOCK set (F_SETFL); 0: leave (a new socket has no status flag).
    nonblock: i32,
};

/// Sets what wants[0..n] ask, in order, reading each buffer size first so
/// that only what differs is written. Returns n, or the index of the socket
/// that failed with its errno in err.
export fn ck_unix_set(wants: [*]const Want, n: usize, err: *i32) i64 {
    for (0..n) |i| {
        const w = &wants[i];
        const rc = setOne(w);
        if (sys.isErr(rc)) {
            err.* = @truncate(-sys.signed(rc));
            return @intCast(i);
        }
    }
    return @intCast(n);
}

fn setOne(w: *const Want) usize {
    const fd = sys.int(w.fd);
    if (w.passcred != 0) {
        const one: i32 = 1;
        const rc = sys.syscall5(sys.NR.setsockopt, fd, SOL_SOCKET, SO_PASSCRED, sys.ptr(&one), 4);
        if (sys.isErr(rc)) return rc;
    }
    const bufs = [_][3]i32{ .{ w.sndbuf, SO_SNDBUF, SO_SNDBUFFORCE }, .{ w.rcvbuf, SO_RCVBUF, SO_RCVBUFFORCE } };
    for (bufs) |b| {
        if (b[0] == 0) continue;
        var cur: i32 = 0;
        var len: u32 = 4;
        var rc = sys.syscall5(sys.NR.getsockopt, fd, SOL_SOCKET, sys.int(b[1]), sys.ptr(&cur), sys.ptr(&len));
        if (sys.isErr(rc)) return rc;
        if (cur == b[0]) continue;
        // The kernel doubles what it is given.
        const half: i32 = b[0] >> 1;
        rc = sys.syscall5(sys.NR.setsockopt, fd, SOL_SOCKET, sys.int(b[2]), sys.ptr(&half), 4);
        if (sys.isErr(rc)) return rc;
    }
    if (w.peek_off != -1) {
        const rc = sys.syscall5(sys.NR.setsockopt, fd, SOL_SOCKET, SO_PEEK_OFF, sys.ptr(&w.peek_off), 4);
        if (sys.isErr(rc)) return rc;
    }
    if (w.nonblock != 0) {
        const rc = sys.syscall3(NR_fcntl, fd, F_SETFL, O_NONBLOCK);
        if (sys.isErr(rc)) return rc;
    }
    return 0;
}
