//! Anonymous-inode files ckpt recreates in itself: epoll, timerfd, signalfd.
//! Dump reads an epoll's registrations here in one call (fdinfo parsed and
//! each target compared with the fd it was added under), since a server can
//! have tens of thousands of them; restore creates the files. Which file a
//! target is, and what the restored task must do, is decided in TypeScript
//! (src/files/epoll.ts, timerfd.ts, signalfd.ts).
const sys = @import("sys.zig");
const strings = @import("text.zig");
const put = strings.put;
const putInt = strings.putInt;

const NR_newfstatat = 262;
const NR_clock_gettime = 228;
const NR_timerfd_create = 283;
const NR_timerfd_settime = 286;
const NR_timerfd_gettime = 287;
const NR_signalfd4 = 289;
const NR_epoll_create1 = 291;
const NR_kcmp = 312;

const KCMP_EPOLL_TFD = 7;
const S_IFMT = 0o170000;
const S_IFSOCK = 0o140000;
const TFD_IOC_SET_TICKS = 0x40085400;

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

export fn ck_epoll_create1(flags: i32) i64 {
    return ret(sys.syscall1(NR_epoll_create1, sys.int(flags)));
}

/// One `tfd:` line of an epoll's fdinfo, and whether the fd it names in the
/// same task still holds that very file.
pub const Target = extern struct {
    tfd: i32,
    events: u32,
    data: u64,
    ino: u64,
    /// Among the lines naming the same tfd, this one's index (kcmp's toff).
    toff: u32,
    /// The target's superblock device as the kernel encodes it (fdinfo sdev).
    sdev: u32,
    /// 1: fd tfd of the task is the target file; 0: it is not (another file,
    /// or closed); the target must be looked for elsewhere.
    same: i32,
    _pad: u32 = 0,
};

const KcmpEpollSlot = extern struct { efd: u32, tfd: u32, toff: u32 };

/// kcmp(pid1, pid2, KCMP_EPOLL_TFD): 0 when fd1 of pid1 is the file
/// registered in epoll efd of pid2 under (tfd, toff).
export fn ck_kcmp_epoll_tfd(pid1: i32, fd1: i32, pid2: i32, efd: i32, tfd: i32, toff: u32) i64 {
    const slot = KcmpEpollSlot{ .efd = @bitCast(efd), .tfd = @bitCast(tfd), .toff = toff };
    return ret(sys.syscall5(NR_kcmp, sys.int(pid1), sys.int(pid2), KCMP_EPOLL_TFD, sys.int(fd1), sys.ptr(&slot)));
}

/// One fd of a task's table as the dump read it: what a target is compared
/// with before kcmp.
pub const FdStat = extern struct { fd: i32, mode: u32, dev: u64, ino: u64 };

/// Parses the epoll fdinfo `text` of fd epfd of pid into out (at most max);
/// returns how many targets the text has (more than max: call again with
/// room for them) or -errno. known[0..nknown] (sorted by fd) is the task's
/// fd table as already read: a target's fd found there is not stat'ed again.
export fn ck_epoll_targets(pid: i32, epfd: i32, text: [*]const u8, len: usize, out: [*]Target, max: usize, known: [*]const FdStat, nknown: usize) i64 {
    var n: usize = 0;
    var i: usize = 0;
    // Fd numbers seen so far (below 65536): a repeated one (a file added
    // again under a number since reused) is rare, so only it is searched.
    var seen: [1024]u64 = @splat(0);
    while (i < len) {
        var end = i;
        while (end < len and text[end] != '\n') end += 1;
        const line = text[i..end];
        i = end + 1;
        if (!startsWith(line, "tfd:")) continue;
        if (n < max) {
            const tfd = field(line, "tfd:", 10) orelse return -22;
            var t = Target{
                .tfd = @truncate(@as(i64, @bitCast(tfd))),
                .events = @truncate(field(line, "events:", 16) orelse return -22),
                .data = field(line, "data:", 16) orelse return -22,
                .ino = field(line, "ino:", 16) orelse return -22,
                .sdev = @truncate(field(line, "sdev:", 16) orelse return -22),
                .toff = 0,
                .same = 0,
            };
            const u: u32 = @bitCast(t.tfd);
            const bit = @as(u64, 1) << @intCast(u % 64);
            if (u >= 65536 or seen[u / 64] & bit != 0) {
                for (out[0..n]) |prev| {
                    if (prev.tfd == t.tfd) t.toff += 1;
                }
            } else seen[u / 64] |= bit;
            t.same = sameAtOwnFd(pid, epfd, &t, known[0..nknown]);
            out[n] = t;
        }
        n += 1;
    }
    return @intCast(n);
}

/// A socket has one open file (a socket inode cannot be opened again), so
/// for one the inode alone says it; other files are compared with kcmp.
fn sameAtOwnFd(pid: i32, epfd: i32, t: *const Target, known: []const FdStat) i32 {
    var dev: u64 = 0;
    var ino: u64 = 0;
    var mode: u32 = 0;
    if (find(known, t.tfd)) |k| {
        dev = k.dev;
        ino = k.ino;
        mode = k.mode;
    } else {
        var path: [64]u8 = undefined;
        var p: usize = 0;
        p = put(&path, p, "/proc/");
        p = putInt(&path, p, @intCast(pid));
        p = put(&path, p, "/fd/");
        p = putInt(&path, p, @intCast(t.tfd));
        path[p] = 0;
        var st: [144]u8 align(8) = undefined;
        const rc = sys.syscall4(NR_newfstatat, sys.int(@as(i32, -100)), sys.ptr(&path), sys.ptr(&st), 0);
        if (sys.isErr(rc)) return 0; // closed
        dev = @as(*const u64, @ptrCast(&st[0])).*;
        ino = @as(*const u64, @ptrCast(&st[8])).*;
        mode = @as(*const u32, @ptrCast(@alignCast(&st[24]))).*;
    }
    if (ino != t.ino or dev != userDev(t.sdev)) return 0;
    if (mode & S_IFMT == S_IFSOCK) return 1;
    const k = ck_kcmp_epoll_tfd(pid, t.tfd, pid, epfd, t.tfd, t.toff);
    return if (k == 0) 1 else 0;
}

fn find(known: []const FdStat, fd: i32) ?*const FdStat {
    var lo: usize = 0;
    var hi: usize = known.len;
    while (lo < hi) {
        const mid = lo + (hi - lo) / 2;
        if (known[mid].fd == fd) return &known[mid];
        if (known[mid].fd < fd) lo = mid + 1 else hi = mid;
    }
    return null;
}

/// The kernel's dev_t (major << 20 | minor) as stat(2) gives it.
fn userDev(kdev: u32) u64 {
    const major: u64 = kdev >> 20;
    const minor: u64 = kdev & 0xfffff;
    return (minor & 0xff) | (major << 8) | ((minor & ~@as(u64, 0xff)) << 12);
}

fn startsWith(s: []const u8, prefix: []const u8) bool {
    if (s.len < prefix.len) return false;
    for (prefix, 0..) |c, k| if (s[k] != c) return false;
    return true;
}

/// The number after `key` in line (spaces skipped), in base 10 or 16.
fn field(line: []const u8, key: []const u8, base: u8) ?u64 {
    var i: usize = 0;
    while (i + key.len <= line.len) : (i += 1) {
        if (startsWith(line[i..], key)) break;
    } else return null;
    i += key.len;
    while (i < line.len and line[i] == ' ') i += 1;
    var v: u64 = 0;
    var digits: usize = 0;
    while (i < line.len) : (i += 1) {
        const c = line[i];
        const d: u64 = switch (c) {
            '0'...'9' => c - '0',
            'a'...'f' => if (base == 16) c - 'a' + 10 else break,
            else => break,
        };
        v = v *% base +% d;
        digits += 1;
    }
    return if (digits == 0) null else v;
}

const Timespec = extern struct { sec: i64, nsec: i64 };
const Itimerspec = extern struct { interval: Timespec, value: Timespec };

fn toTs(ns: u64) Timespec {
    return .{ .sec = @intCast(ns / 1_000_000_000), .nsec = @intCast(ns % 1_000_000_000) };
}

fn fromTs(t: Timespec) u64 {
    return @as(u64, @intCast(t.sec)) * 1_000_000_000 + @as(u64, @intCast(t.nsec));
}

export fn ck_timerfd_create(clockid: i32, flags: i32) i64 {
    return ret(sys.syscall2(NR_timerfd_create, sys.int(clockid), sys.int(flags)));
}

/// timerfd_settime with times in nanoseconds (value 0 disarms).
export fn ck_timerfd_settime(fd: i32, flags: i32, value_ns: u64, interval_ns: u64) i64 {
    const its = Itimerspec{ .interval = toTs(interval_ns), .value = toTs(value_ns) };
    return ret(sys.syscall4(NR_timerfd_settime, sys.int(fd), sys.int(flags), sys.ptr(&its), 0));
}

/// timerfd_gettime, then the timer's clock at once: out = [value_ns,
/// interval_ns, clock_ns]. gettime also moves an expired periodic timer on
/// to its next expiry (adding the missed ones to its count), as the
/// program's own next read would: nothing it can observe changes.
export fn ck_timerfd_gettime(fd: i32, clockid: i32, out: *[3]u64) i64 {
    var its: Itimerspec = undefined;
    const rc = sys.syscall2(NR_timerfd_gettime, sys.int(fd), sys.ptr(&its));
    if (sys.isErr(rc)) return ret(rc);
    var now: Timespec = undefined;
    const rc2 = sys.syscall2(NR_clock_gettime, sys.int(clockid), sys.ptr(&now));
    if (sys.isErr(rc2)) return ret(rc2);
    out.* = .{ fromTs(its.value), fromTs(its.interval), fromTs(now) };
    return 0;
}

export fn ck_clock_ns(clockid: i32, out: *u64) i64 {
    var now: Timespec = undefined;
    const rc = sys.syscall2(NR_clock_gettime, sys.int(clockid), sys.ptr(&now));
    if (sys.isErr(rc)) return ret(rc);
    out.* = fromTs(now);
    return 0;
}

/// Expirations not read yet (TFD_IOC_SET_TICKS; CONFIG_CHECKPOINT_RESTORE).
export fn ck_timerfd_set_ticks(fd: i32, ticks: u64) i64 {
    const t = ticks;
    return ret(sys.syscall3(sys.NR.ioctl, sys.int(fd), TFD_IOC_SET_TICKS, sys.ptr(&t)));
}

export fn ck_signalfd(mask: u64, flags: i32) i64 {
    const m = mask;
    return ret(sys.syscall4(NR_signalfd4, sys.int(@as(i32, -1)), sys.ptr(&m), 8, sys.int(flags)));
}

const CLONE_PIDFD = 0x1000;
const WALL = 0x40000000;

/// A pidfd of a process that has exited and been reaped, as a pidfd whose
/// process is gone is at dump: a child forked for the purpose (no exit
/// signal, so no one else is told) exits at once and is reaped here.
export fn ck_dead_pidfd() i64 {
    var pidfd: i32 = -1;
    const rc = sys.syscall5(sys.NR.clone, CLONE_PIDFD, 0, sys.ptr(&pidfd), 0, 0);
    if (sys.isErr(rc)) return ret(rc);
    if (rc == 0) {
        _ = sys.syscall1(sys.NR.exit, 0);
        unreachable;
    }
    var st: i32 = 0;
    const w = sys.syscall4(sys.NR.wait4, rc, sys.ptr(&st), WALL, 0);
    if (sys.isErr(w)) {
        _ = sys.syscall1(sys.NR.close, sys.int(pidfd));
        return ret(w);
    }
    return pidfd;
}
