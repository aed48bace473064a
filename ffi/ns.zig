//! Namespaces, native half: entering a namespace on the calling thread
//! (setns), and the system calls that read and rebuild what an IPC and a UTS
//! namespace hold — System V shared memory, semaphores and message queues,
//! POSIX message queues (and a private mount of their filesystem to list
//! them), host and domain names. Every call acts in the namespaces of the
//! calling thread only, so ckpt enters a tree's namespace, does its work and
//! leaves it again within one synchronous stretch of TypeScript.
const sys = @import("sys.zig");
const NR = sys.NR;

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

export fn ck_setns(fd: i32, nstype: i32) i64 {
    return ret(sys.syscall2(NR.setns, sys.int(fd), sys.int(nstype)));
}

/// struct utsname: six fields of 65 bytes (nodename is the second,
/// domainname the sixth).
export fn ck_uname(out: *[390]u8) i64 {
    return ret(sys.syscall1(NR.uname, sys.ptr(out)));
}

export fn ck_sethostname(name: [*]const u8, len: usize) i64 {
    return ret(sys.syscall2(NR.sethostname, sys.ptr(name), len));
}

export fn ck_setdomainname(name: [*]const u8, len: usize) i64 {
    return ret(sys.syscall2(NR.setdomainname, sys.ptr(name), len));
}

export fn ck_clock_gettime(clock: i32, out: *[2]i64) i64 {
    return ret(sys.syscall2(NR.clock_gettime, sys.int(clock), sys.ptr(out)));
}

// ---- System V ---------------------------------------------------------------

pub const IPC_SHM: u32 = 0;
pub const IPC_SEM: u32 = 1;
pub const IPC_MSG: u32 = 2;

/// Creates a System V object (kind IPC_SHM: shmget(key, arg, flags), IPC_SEM:
/// semget(key, arg, flags), IPC_MSG: msgget(key, flags)) with the calling
/// thread's effective ids set to cuid/cgid for the call, so the object's
/// creator is the dumped one; the thread's ids are put back before returning.
/// Raw setresuid/setresgid act on this thread alone.
export fn ck_ipc_create(kind: u32, key: i32, arg: u64, flags: i32, cuid: u32, cgid: u32) i64 {
    const keep: usize = ~@as(usize, 0); // -1: leave that id as it is
    const old_gid = sys.syscall0(NR.getegid);
    const old_uid = sys.syscall0(NR.geteuid);
    var rc = sys.syscall3(NR.setresgid, keep, cgid, keep);
    if (sys.isErr(rc)) return ret(rc);
    rc = sys.syscall3(NR.setresuid, keep, cuid, keep);
    if (!sys.isErr(rc)) {
        rc = switch (kind) {
            IPC_SHM => sys.syscall3(NR.shmget, sys.int(key), arg, sys.int(flags)),
            IPC_SEM => sys.syscall3(NR.semget, sys.int(key), arg, sys.int(flags)),
            IPC_MSG => sys.syscall2(NR.msgget, sys.int(key), sys.int(flags)),
            else => sys.int(@as(isize, -22)),
        };
        _ = sys.syscall3(NR.setresuid, keep, old_uid, keep);
    }
    _ = sys.syscall3(NR.setresgid, keep, old_gid, keep);
    return ret(rc);
}

export fn ck_shmctl(id: i32, cmd: i32, buf: ?[*]u8) i64 {
    return ret(sys.syscall3(NR.shmctl, sys.int(id), sys.int(cmd), if (buf) |b| sys.ptr(b) else 0));
}

const SHM_RDONLY = 0o10000;

/// Copies len bytes at offset off of segment id out to buf (to_segment 0)
/// or from buf into it (1), attaching it for the copy only.
export fn ck_shm_copy(id: i32, off: u64, buf: [*]u8, len: usize, to_segment: u32) i64 {
    const flags: usize = if (to_segment != 0) 0 else SHM_RDONLY;
    const addr = sys.syscall3(NR.shmat, sys.int(id), 0, flags);
    if (sys.isErr(addr)) return ret(addr);
    const seg: [*]u8 = @ptrFromInt(addr + off);
    if (to_segment != 0) @memcpy(seg[0..len], buf[0..len]) else @memcpy(buf[0..len], seg[0..len]);
    _ = sys.syscall1(NR.shmdt, addr);
    return 0;
}

/// Attaches segment id read-only in ckpt; returns the address.
export fn ck_shm_attach(id: i32) i64 {
    return ret(sys.syscall3(NR.shmat, sys.int(id), 0, SHM_RDONLY));
}

export fn ck_shm_detach(addr: u64) i64 {
    return ret(sys.syscall1(NR.shmdt, addr));
}

/// semctl(id, num, cmd, arg): arg is the union semun passed by value (a
/// pointer for IPC_STAT, IPC_SET, GETALL and SETALL).
export fn ck_semctl(id: i32, num: i32, cmd: i32, arg: u64) i64 {
    return ret(sys.syscall4(NR.semctl, sys.int(id), sys.int(num), sys.int(cmd), arg));
}

export fn ck_msgctl(id: i32, cmd: i32, buf: ?[*]u8) i64 {
    return ret(sys.syscall3(NR.msgctl, sys.int(id), sys.int(cmd), if (buf) |b| sys.ptr(b) else 0));
}

/// buf: the message type (8 bytes) then len bytes of text.
export fn ck_msgsnd(id: i32, buf: [*]const u8, len: usize, flags: i32) i64 {
    return ret(sys.syscall4(NR.msgsnd, sys.int(id), sys.ptr(buf), len, sys.int(flags)));
}

export fn ck_msgrcv(id: i32, buf: [*]u8, len: usize, typ: i64, flags: i32) i64 {
    return ret(sys.syscall5(NR.msgrcv, sys.int(id), sys.ptr(buf), len, @bitCast(typ), sys.int(flags)));
}

// ---- POSIX message queues ---------------------------------------------------

/// name without the leading '/'; attr: struct mq_attr (64 bytes) or null.
export fn ck_mq_open(name: [*:0]const u8, oflag: i32, mode: u32, attr: ?[*]const u8) i64 {
    return ret(sys.syscall4(NR.mq_open, sys.ptr(name), sys.int(oflag), mode, if (attr) |a| sys.ptr(a) else 0));
}

/// mq_open(O_CREAT) as the given owner: the calling thread's fsuid/fsgid are
/// set for the call (the queue's owner is its creator's, and a filesystem of
/// another user namespace takes no creator it cannot map), then put back.
export fn ck_mq_create(name: [*:0]const u8, oflag: i32, mode: u32, attr: [*]const u8, uid: u32, gid: u32) i64 {
    const old_gid = sys.syscall1(NR.setfsgid, gid);
    const old_uid = sys.syscall1(NR.setfsuid, uid);
    const rc = sys.syscall4(NR.mq_open, sys.ptr(name), sys.int(oflag), mode, sys.ptr(attr));
    _ = sys.syscall1(NR.setfsuid, old_uid);
    _ = sys.syscall1(NR.setfsgid, old_gid);
    return ret(rc);
}

/// Never waits: the descriptor is expected to be O_NONBLOCK.
export fn ck_mq_send(fd: i32, buf: [*]const u8, len: usize, prio: u32) i64 {
    return ret(sys.syscall5(NR.mq_timedsend, sys.int(fd), sys.ptr(buf), len, prio, 0));
}

export fn ck_mq_receive(fd: i32, buf: [*]u8, len: usize, prio: *u32) i64 {
    return ret(sys.syscall5(NR.mq_timedreceive, sys.int(fd), sys.ptr(buf), len, sys.ptr(prio), 0));
}

export fn ck_mq_getattr(fd: i32, out: *[8]i64) i64 {
    return ret(sys.syscall3(NR.mq_getsetattr, sys.int(fd), 0, sys.ptr(out)));
}

const FSOPEN_CLOEXEC = 1;
const FSCONFIG_CMD_CREATE = 6;
const FSMOUNT_CLOEXEC = 1;

/// A detached mount of the mqueue filesystem of the calling thread's IPC
/// namespace (attached nowhere, so no mount namespace sees it): its fd.
export fn ck_mqueue_mount() i64 {
    const fs = sys.syscall2(NR.fsopen, sys.ptr("mqueue"), FSOPEN_CLOEXEC);
    if (sys.isErr(fs)) return ret(fs);
    defer _ = sys.syscall1(NR.close, fs);
    const rc = sys.syscall5(NR.fsconfig, fs, FSCONFIG_CMD_CREATE, 0, 0, 0);
    if (sys.isErr(rc)) return ret(rc);
    return ret(sys.syscall3(NR.fsmount, fs, FSMOUNT_CLOEXEC, 0));
}

// ---- descriptors handed to a forked task --------------------------------------

const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const max_batch = 64;

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

/// Sends fds over a UNIX socket, at most 64 per message (one byte each).
export fn ck_send_fds(sock: i32, fds: [*]const i32, n: usize) i64 {
    var done: usize = 0;
    while (done < n) {
        const k = @min(n - done, max_batch);
        var control: [16 + max_batch * 4]u8 align(8) = undefined;
        const clen = 16 + k * 4;
        const hdr: *extern struct { len: u64, level: i32, type: i32 } = @ptrCast(&control);
        hdr.* = .{ .len = 16 + k * 4, .level = SOL_SOCKET, .type = SCM_RIGHTS };
        const dst: [*]i32 = @ptrCast(@alignCast(&control[16]));
        @memcpy(dst[0..k], fds[done .. done + k]);
        var byte: u8 = @intCast(k);
        var iov = sys.Iovec{ .base = sys.ptr(&byte), .len = 1 };
        var msg = Msghdr{ .iov = sys.ptr(&iov), .iovlen = 1, .control = sys.ptr(&control), .controllen = (clen + 7) & ~@as(usize, 7) };
        const rc = sys.syscall3(NR.sendmsg, sys.int(sock), sys.ptr(&msg), 0);
        if (sys.isErr(rc)) return ret(rc);
        done += k;
    }
    return 0;
}

const MSG_CMSG_CLOEXEC = 0x40000000;

/// Receives the fds sent by ck_send_fds (raw syscalls only: it runs in a
/// forked task) and puts the i-th at number at[i]. Returns 0 or -errno.
pub fn receiveFds(sock: i32, at: []const i32) usize {
    const S = sys;
    var done: usize = 0;
    while (done < at.len) {
        var control: [16 + max_batch * 4]u8 align(8) = undefined;
        var byte: u8 = 0;
        var iov = S.Iovec{ .base = S.ptr(&byte), .len = 1 };
        var msg = Msghdr{ .iov = S.ptr(&iov), .iovlen = 1, .control = S.ptr(&control), .controllen = control.len };
        const rc = S.syscall3(S.NR.recvmsg, S.int(sock), S.ptr(&msg), MSG_CMSG_CLOEXEC);
        if (S.isErr(rc)) return rc;
        if (rc != 1 or msg.controllen < 16) return S.int(@as(isize, -71)); // EPROTO
        const hdr: *const extern struct { len: u64, level: i32, type: i32 } = @ptrCast(&control);
        const k = (hdr.len - 16) / 4;
        if (hdr.level != SOL_SOCKET or hdr.type != SCM_RIGHTS or k != byte or done + k > at.len) {
            return S.int(@as(isize, -71));
        }
        const got: [*]const i32 = @ptrCast(@alignCast(&control[16]));
        for (got[0..k], 0..) |fd, i| {
            const r = S.syscall3(S.NR.dup3, S.int(fd), S.int(at[done + i]), 0);
            _ = S.syscall1(S.NR.close, S.int(fd));
            if (S.isErr(r)) return r;
        }
        done += k;
    }
    return 0;
}

// ---- probes for `ckpt check` ----------------------------------------------------

const CLONE_NEWTIME = 0x80;
const CLONE_NEWUTS = 0x04000000;
const CLONE_NEWIPC = 0x08000000;
const CLONE_NEWPID = 0x20000000;
const IPC_PRIVATE = 0;
const IPC_CREAT = 0o1000;
const IPC_NOWAIT = 0o4000;
const MSG_COPY = 0o40000;

/// In a forked child (raw syscalls only), what a restore does with
/// namespaces: probe 0 makes a time namespace, sets its offsets and enters
/// it; probe 1 makes IPC and UTS namespaces and uses what dump and restore
/// use there (a message read with MSG_COPY, a private mqueue mount, a host
/// name); probe 2 forks a PID namespace's init with set_tid [1, pid].
/// Returns 0, or -(step << 16 | errno) for the step that failed.
export fn ck_probe_ns(probe: u32, pid: i32) i64 {
    const rc = sys.syscall2(NR.clone3, sys.ptr(&sys.CloneArgs{ .exit_signal = sys.SIGCHLD }), @sizeOf(sys.CloneArgs));
    if (sys.isErr(rc)) return ret(rc);
    if (rc == 0) {
        const r = switch (probe) {
            0 => probeTime(),
            1 => probeIpc(),
            else => probePid(pid),
        };
        while (true) _ = sys.syscall1(NR.exit_group, r);
    }
    var status: i32 = 0;
    while (true) {
        const w = sys.syscall4(NR.wait4, rc, sys.ptr(&status), sys.WALL, 0);
        if (sys.signed(w) == -4) continue;
        if (sys.isErr(w)) return ret(w);
        break;
    }
    const st: u32 = @bitCast(status);
    if (st & 0x7f != 0) return -(0xff << 16);
    const code = (st >> 8) & 0xff;
    if (code == 0) return 0;
    // The child exits with step * 32 + a small errno class; report as is.
    return -@as(i64, @intCast(((code >> 5) << 16) | (code & 31)));
}

fn step(n: usize, rc: usize) ?usize {
    if (!sys.isErr(rc)) return null;
    const e: usize = @intCast(-sys.signed(rc));
    return n * 32 + @min(e, 31);
}

fn probeTime() usize {
    if (step(1, sys.syscall1(NR.unshare, CLONE_NEWTIME))) |r| return r;
    const fd = sys.syscall4(NR.openat, sys.int(@as(i32, -100)), sys.ptr("/proc/self/timens_offsets"), sys.O_WRONLY, 0);
    if (step(2, fd)) |r| return r;
    const text = "monotonic 1 0\nboottime 1 0\n";
    if (step(3, sys.syscall3(NR.write, fd, sys.ptr(text), text.len))) |r| return r;
    _ = sys.syscall1(NR.close, fd);
    const ns = sys.syscall4(NR.openat, sys.int(@as(i32, -100)), sys.ptr("/proc/self/ns/time_for_children"), sys.O_RDONLY, 0);
    if (step(4, ns)) |r| return r;
    if (step(5, sys.syscall2(NR.setns, ns, CLONE_NEWTIME))) |r| return r;
    return 0;
}

fn probeIpc() usize {
    if (step(1, sys.syscall1(NR.unshare, CLONE_NEWIPC | CLONE_NEWUTS))) |r| return r;
    const q = sys.syscall2(NR.msgget, IPC_PRIVATE, IPC_CREAT | 0o600);
    if (step(2, q)) |r| return r;
    var msg = extern struct { t: i64, b: [8]u8 }{ .t = 1, .b = "ckptckpt".* };
    if (step(3, sys.syscall4(NR.msgsnd, q, sys.ptr(&msg), 8, IPC_NOWAIT))) |r| return r;
    msg.t = 0;
    if (step(4, sys.syscall5(NR.msgrcv, q, sys.ptr(&msg), 8, 0, IPC_NOWAIT | MSG_COPY))) |r| return r;
    const m = ck_mqueue_mount();
    if (m < 0) return 5 * 32 + @as(usize, @intCast(@min(-m, 31)));
    if (step(6, sys.syscall2(NR.sethostname, sys.ptr("ckpt"), 4))) |r| return r;
    return 0;
}

fn probePid(pid: i32) usize {
    var tids = [2]i32{ 1, pid };
    var args = sys.CloneArgs{ .flags = CLONE_NEWPID, .exit_signal = sys.SIGCHLD, .set_tid = sys.ptr(&tids), .set_tid_size = 2 };
    const rc = sys.syscall2(NR.clone3, sys.ptr(&args), @sizeOf(sys.CloneArgs));
    if (step(1, rc)) |r| return r;
    if (rc == 0) {
        // pid 1 inside: say so through the exit status.
        const me = sys.syscall0(NR.getpid);
        while (true) _ = sys.syscall1(NR.exit_group, if (me == 1) 0 else 2 * 32);
    }
    var status: i32 = 0;
    while (true) {
        const w = sys.syscall4(NR.wait4, rc, sys.ptr(&status), 0, 0);
        if (sys.signed(w) == -4) continue;
        if (step(3, w)) |r| return r;
        break;
    }
    if (rc != @as(usize, @intCast(pid))) return 4 * 32;
    const st: u32 = @bitCast(status);
    return (st >> 8) & 0xff;
}
