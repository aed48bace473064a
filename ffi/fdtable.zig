//! A frozen task's fds as /proc shows them, many per call: for each, the
//! link (/proc/PID/fd/N), the fdinfo text and the stat of the open file. A
//! server holds tens of thousands of fds; three calls from JavaScript for
//! each would cost more than the rest of its dump.
const sys = @import("sys.zig");
const strings = @import("text.zig");
const put = strings.put;
const putInt = strings.putInt;

const NR_readlinkat = 267;
const NR_newfstatat = 262;
const AT_FDCWD: i32 = -100;

/// Each record: this header, the link, the fdinfo text, padded to 8 bytes.
pub const Record = extern struct {
    fd: i32,
    /// 0, or -errno of the first call that failed (-ENOENT: closed meanwhile).
    err: i32,
    link_len: u32,
    info_len: u32,
    /// struct stat as newfstatat gives it (x86_64: 144 bytes).
    stat: [144]u8 align(8),
};

const header = @sizeOf(Record);

/// Reads fds[0..n] of pid into out (cap bytes); returns how many fds it
/// took (fewer than n when out is full: call again for the rest; 0: give
/// room for one larger record) or -errno.
export fn ck_read_fds(pid: i32, fds: [*]const i32, n: usize, out: [*]u8, cap: usize) i64 {
    // Names looked up from the two directories, not from /proc each time.
    var dpath: [64]u8 = undefined;
    _ = procDir(&dpath, pid, "/fd");
    const fd_dir = sys.syscall4(sys.NR.openat, sys.int(AT_FDCWD), sys.ptr(&dpath), O_DIRECTORY | sys.O_CLOEXEC, 0);
    if (sys.isErr(fd_dir)) return sys.signed(fd_dir);
    defer _ = sys.syscall1(sys.NR.close, fd_dir);
    _ = procDir(&dpath, pid, "/fdinfo");
    const info_dir = sys.syscall4(sys.NR.openat, sys.int(AT_FDCWD), sys.ptr(&dpath), O_DIRECTORY | sys.O_CLOEXEC, 0);
    if (sys.isErr(info_dir)) return sys.signed(info_dir);
    defer _ = sys.syscall1(sys.NR.close, info_dir);
    var at: usize = 0;
    var done: usize = 0;
    while (done < n) : (done += 1) {
        const fd = fds[done];
        if (at + header + 4096 > cap) break;
        const rec: *Record = @ptrCast(@alignCast(out + at));
        rec.* = .{ .fd = fd, .err = 0, .link_len = 0, .info_len = 0, .stat = undefined };
        var path: [24]u8 = undefined;
        const len = putInt(&path, 0, @intCast(fd));
        path[len] = 0;
        var body = at + header;
        const l = sys.syscall4(NR_readlinkat, fd_dir, sys.ptr(&path), sys.ptr(out + body), 4096);
        if (sys.isErr(l)) {
            rec.err = @truncate(sys.signed(l));
            at = body;
            continue;
        }
        rec.link_len = @intCast(l);
        body += l;
        const s = sys.syscall4(NR_newfstatat, fd_dir, sys.ptr(&path), sys.ptr(&rec.stat), 0);
        if (sys.isErr(s)) {
            rec.err = @truncate(sys.signed(s));
            at = align8(body);
            continue;
        }
        const f = sys.syscall4(sys.NR.openat, info_dir, sys.ptr(&path), sys.O_CLOEXEC, 0);
        if (sys.isErr(f)) {
            rec.err = @truncate(sys.signed(f));
            at = align8(body);
            continue;
        }
        var got: usize = 0;
        var full = false;
        while (true) {
            const room = cap - body - got;
            if (room == 0) {
                full = true;
                break;
            }
            const r = sys.syscall3(sys.NR.read, f, sys.ptr(out + body + got), room);
            if (sys.isErr(r)) {
                rec.err = @truncate(sys.signed(r));
                break;
            }
            if (r == 0) break;
            got += r;
        }
        _ = sys.syscall1(sys.NR.close, f);
        if (full) break; // this one again, with more room
        rec.info_len = @intCast(got);
        at = align8(body + got);
    }
    return @intCast(done);
}

fn align8(v: usize) usize {
    return (v + 7) & ~@as(usize, 7);
}

const O_DIRECTORY = 0o200000;

/// "/proc/PID<sub>", NUL-terminated, in buf.
fn procDir(buf: *[64]u8, pid: i32, sub: []const u8) usize {
    var p: usize = 0;
    p = put(buf, p, "/proc/");
    p = putInt(buf, p, @intCast(pid));
    p = put(buf, p, sub);
    buf[p] = 0;
    return p;
}

