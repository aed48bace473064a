//! A frozen task's fds as /proc shows them, many per call: for each, the
//! fdinfo text, the link (/proc/PID/fd/N) and the stat of the open file. A
//! server holds tens of thousands of fds; three calls from JavaScript for
//! each would cost more than the rest of its dump. Each /proc lookup costs
//! several microseconds here, so a socket (known from its fdinfo: its mount
//! is sockfs) gets its link and stat from that text alone: sockfs names
//! every file "socket:[INO]" and has one device.
const sys = @import("sys.zig");
const strings = @import("text.zig");
const put = strings.put;
const putInt = strings.putInt;

const NR_readlinkat = 267;
const NR_newfstatat = 262;
const NR_getdents64 = 217;
const AT_FDCWD: i32 = -100;
const S_IFSOCK: u32 = 0o140000;
const SOCK_DGRAM = 2;

/// Each record: this header, the fdinfo text, the link, padded to 8 bytes.
pub const Record = extern struct {
    fd: i32,
    /// 0, or -errno of the first call that failed (-ENOENT: closed meanwhile).
    err: i32,
    link_len: u32,
    info_len: u32,
    /// FROM_INFO: a socket's link and stat were made from its fdinfo (the
    /// stat has its device, inode and mode only).
    flags: u32,
    /// fdinfo's "flags:" (octal, O_CLOEXEC included) and "pos:".
    fdflags: u32,
    pos: i64,
    /// struct stat as newfstatat gives it (x86_64: 144 bytes).
    stat: [144]u8 align(8),
};

pub const FROM_INFO: u32 = 1;
/// The fdinfo text has `lock:` lines (file locks of this open file).
pub const LOCKS: u32 = 2;

const header = @sizeOf(Record);

/// sockfs as fdinfo and stat show it, learnt once from a socket of ckpt's.
var sockfs_mnt: u64 = 0;
var sockfs_dev: u64 = 0;
var sockfs_known = false;

fn learnSockfs() void {
    if (sockfs_known) return;
    sockfs_known = true;
    const s = sys.syscall3(sys.NR.socket, sys.AF_UNIX, SOCK_DGRAM | sys.SOCK_CLOEXEC, 0);
    if (sys.isErr(s)) return;
    defer _ = sys.syscall1(sys.NR.close, s);
    var st: [144]u8 align(8) = undefined;
    var path: [64]u8 = undefined;
    var p = put(&path, 0, "/proc/self/fdinfo/");
    p = putInt(&path, p, s);
    path[p] = 0;
    const f = sys.syscall4(sys.NR.openat, sys.int(AT_FDCWD), sys.ptr(&path), sys.O_CLOEXEC, 0);
    if (sys.isErr(f)) return;
    defer _ = sys.syscall1(sys.NR.close, f);
    var text: [512]u8 = undefined;
    const r = sys.syscall3(sys.NR.read, f, sys.ptr(&text), text.len);
    if (sys.isErr(r)) return;
    if (sys.isErr(sys.syscall4(NR_newfstatat, s, sys.ptr(""), sys.ptr(&st), AT_EMPTY_PATH))) return;
    const mnt = field(text[0..r], "mnt_id:") orelse return;
    sockfs_mnt = mnt;
    sockfs_dev = @as(*const u64, @ptrCast(&st[0])).*;
}

const AT_EMPTY_PATH = 0x1000;

/// Reads fds[0..n] of pid into out (cap bytes); returns how many fds it
/// took (fewer than n when out is full: call again for the rest; 0: give
/// room for one larger record) or -errno.
export fn ck_read_fds(pid: i32, fds: [*]const i32, n: usize, out: [*]u8, cap: usize) i64 {
    learnSockfs();
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
        if (at + header + 4096 + 64 > cap) break;
        const rec: *Record = @ptrCast(@alignCast(out + at));
        rec.* = .{ .fd = fd, .err = 0, .link_len = 0, .info_len = 0, .flags = 0, .fdflags = 0, .pos = 0, .stat = undefined };
        var path: [24]u8 = undefined;
        const len = putInt(&path, 0, @intCast(fd));
        path[len] = 0;
        var body = at + header;
        const f = sys.syscall4(sys.NR.openat, info_dir, sys.ptr(&path), sys.O_CLOEXEC, 0);
        if (sys.isErr(f)) {
            rec.err = @truncate(sys.signed(f));
            at = body;
            continue;
        }
        var got: usize = 0;
        var full = false;
        // Room is kept after the text for a link made from it.
        const limit = cap - 4096;
        while (true) {
            const room = limit - body - got;
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
        const text = out[body .. body + got];
        body += got;
        if (rec.err != 0) {
            at = align8(body);
            continue;
        }
        rec.fdflags = @truncate(fieldIn(text, "flags:", 8) orelse 0);
        if (valueAt(text, "lock:") != null) rec.flags |= LOCKS;
        rec.pos = signedField(text, "pos:") orelse 0;
        if (sockfs_mnt != 0 and field(text, "mnt_id:") == sockfs_mnt) {
            if (field(text, "ino:")) |ino| {
                var l = put(out[0..cap], body, "socket:[");
                l = putInt(out[0..cap], l, ino);
                l = put(out[0..cap], l, "]");
                rec.link_len = @intCast(l - body);
                rec.flags |= FROM_INFO;
                @memset(&rec.stat, 0);
                @as(*u64, @ptrCast(&rec.stat[0])).* = sockfs_dev;
                @as(*u64, @ptrCast(&rec.stat[8])).* = ino;
                @as(*u64, @ptrCast(&rec.stat[16])).* = 1; // nlink
                @as(*u32, @ptrCast(@alignCast(&rec.stat[24]))).* = S_IFSOCK | 0o777;
                at = align8(l);
                continue;
            }
        }
        const l = sys.syscall4(NR_readlinkat, fd_dir, sys.ptr(&path), sys.ptr(out + body), 4096);
        if (sys.isErr(l)) {
            rec.err = @truncate(sys.signed(l));
            at = align8(body);
            continue;
        }
        rec.link_len = @intCast(l);
        body += l;
        const s = sys.syscall4(NR_newfstatat, fd_dir, sys.ptr(&path), sys.ptr(&rec.stat), 0);
        if (sys.isErr(s)) rec.err = @truncate(sys.signed(s));
        at = align8(body);
    }
    return @intCast(done);
}

/// The fd numbers of pid (unsorted) into out; returns how many there are
/// (more than cap: call again with room for that many) or -errno. Listed
/// from fdinfo/, whose entries ck_read_fds opens next: listing fd/ would
/// make the kernel build an entry for every fd there too, which a socket's
/// record does not need.
export fn ck_list_fds(pid: i32, out: [*]i32, cap: usize) i64 {
    var dpath: [64]u8 = undefined;
    _ = procDir(&dpath, pid, "/fdinfo");
    const dir = sys.syscall4(sys.NR.openat, sys.int(AT_FDCWD), sys.ptr(&dpath), O_DIRECTORY | sys.O_CLOEXEC, 0);
    if (sys.isErr(dir)) return sys.signed(dir);
    defer _ = sys.syscall1(sys.NR.close, dir);
    var buf: [32768]u8 align(8) = undefined;
    var n: usize = 0;
    while (true) {
        const got = sys.syscall3(NR_getdents64, dir, sys.ptr(&buf), buf.len);
        if (sys.isErr(got)) return sys.signed(got);
        if (got == 0) break;
        var off: usize = 0;
        while (off < got) {
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
            const reclen = @as(*align(1) const u16, @ptrCast(&buf[off + 16])).*;
            const name = buf[off + 19 .. off + reclen];
            off += reclen;
            var v: u64 = 0;
            var digits: usize = 0;
            for (name) |c| {
                if (c == 0) break;
                if (c < '0' or c > '9') {
                    digits = 0;
                    break;
                }
                v = v * 10 + (c - '0');
                digits += 1;
            }
            if (digits == 0) continue; // "." and ".."
            if (n < cap) out[n] = @intCast(v);
            n += 1;
        }
    }
    return @intCast(n);
}

/// The number after `key` at the start of a line of text (tabs and spaces
/// skipped), in base 10.
fn field(text: []const u8, key: []const u8) ?u64 {
    return fieldIn(text, key, 10);
}

/// Where the first line starting with `key` has its value (blanks skipped).
fn valueAt(text: []const u8, key: []const u8) ?usize {
    var i: usize = 0;
    while (i + key.len <= text.len) {
        if (eql(text[i .. i + key.len], key)) {
            var j = i + key.len;
            while (j < text.len and (text[j] == ' ' or text[j] == '\t')) j += 1;
            return j;
        }
        while (i < text.len and text[i] != '\n') i += 1;
        i += 1;
    }
    return null;
}

fn fieldIn(text: []const u8, key: []const u8, base: u8) ?u64 {
    var j = valueAt(text, key) orelse return null;
    var v: u64 = 0;
    var digits: usize = 0;
    while (j < text.len and text[j] >= '0' and text[j] < '0' + base) : (j += 1) {
        v = v *% base +% (text[j] - '0');
        digits += 1;
    }
    return if (digits > 0) v else null;
}

fn signedField(text: []const u8, key: []const u8) ?i64 {
    const j = valueAt(text, key) orelse return null;
    if (j < text.len and text[j] == '-') {
        const v = fieldIn(text[j + 1 ..], "", 10) orelse return null;
        return -%@as(i64, @bitCast(v));
    }
    return @bitCast(fieldIn(text, key, 10) orelse return null);
}

fn eql(a: []const u8, b: []const u8) bool {
    for (a, b) |x, y| if (x != y) return false;
    return true;
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

