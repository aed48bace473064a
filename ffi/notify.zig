//! inotify and fanotify, and opening an inode by its file handle: what dump
//! needs to find a watched object again and restore needs to recreate the
//! watches and marks. Plain wrappers returning the result or -errno, plus the
//! one loop that would cost a call across the FFI per iteration.
const sys = @import("sys.zig");

const nr_inotify_add_watch = 254;
const nr_inotify_rm_watch = 255;
const nr_inotify_init1 = 294;
const nr_fanotify_init = 300;
const nr_fanotify_mark = 301;
const nr_open_by_handle_at = 304;

const FIONREAD = 0x541B;

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

export fn ck_inotify_init1(flags: i32) i64 {
    return ret(sys.syscall1(nr_inotify_init1, sys.int(flags)));
}

export fn ck_inotify_add_watch(fd: i32, path: [*:0]const u8, mask: u32) i64 {
    return ret(sys.syscall3(nr_inotify_add_watch, sys.int(fd), sys.ptr(path), mask));
}

export fn ck_inotify_rm_watch(fd: i32, wd: i32) i64 {
    return ret(sys.syscall2(nr_inotify_rm_watch, sys.int(fd), sys.int(wd)));
}

/// Takes `count` watch descriptors of a fresh-enough instance so that the
/// next watch gets the number after them: each is a watch on `spare` added
/// and removed at once (the kernel hands wds out cyclically, never going back
/// to a freed one before wrapping). `first` is the wd the first one must get;
/// a different one means the instance is not in the state the caller thinks:
/// -EPROTO, with the wd it got in `got`. Every removal queues an IN_IGNORED;
/// the queue is emptied as it goes so it never overflows (the fd must be
/// non-blocking). Returns 0 or -errno.
export fn ck_inotify_burn(fd: i32, spare: [*:0]const u8, first: i32, count: u32, got: *i32) i64 {
    var buf: [16384]u8 align(8) = undefined;
    var i: u32 = 0;
    while (i < count) : (i += 1) {
        const rc = sys.syscall3(nr_inotify_add_watch, sys.int(fd), sys.ptr(spare), 2); // IN_MODIFY
        if (sys.isErr(rc)) return ret(rc);
        const wd: i32 = @intCast(rc);
        if (@as(i64, wd) != @as(i64, first) + i) {
            got.* = wd;
            return -71; // EPROTO
        }
        const rm = sys.syscall2(nr_inotify_rm_watch, sys.int(fd), rc);
        if (sys.isErr(rm)) return ret(rm);
        if (i % 256 == 255) drainInotify(fd, &buf);
    }
    drainInotify(fd, &buf);
    return 0;
}

fn drainInotify(fd: i32, buf: []u8) void {
    while (true) {
        const rc = sys.syscall3(sys.NR.read, sys.int(fd), sys.ptr(buf.ptr), buf.len);
        if (sys.isErr(rc) or rc == 0) return;
    }
}

export fn ck_fanotify_init(flags: u32, event_f_flags: u32) i64 {
    return ret(sys.syscall2(nr_fanotify_init, flags, event_f_flags));
}

export fn ck_fanotify_mark(fd: i32, flags: u32, mask: u64, dirfd: i32, path: [*:0]const u8) i64 {
    return ret(sys.syscall5(nr_fanotify_mark, sys.int(fd), flags, mask, sys.int(dirfd), sys.ptr(path)));
}

/// `handle` is a struct file_handle (handle_bytes, handle_type, f_handle).
export fn ck_open_by_handle_at(mount_fd: i32, handle: [*]const u8, flags: i32) i64 {
    return ret(sys.syscall3(nr_open_by_handle_at, sys.int(mount_fd), sys.ptr(handle), sys.int(flags)));
}

/// Bytes queued for reading (FIONREAD), on an inotify or fanotify fd.
export fn ck_fionread(fd: i32) i64 {
    var n: i32 = 0;
    const rc = sys.syscall3(sys.NR.ioctl, sys.int(fd), FIONREAD, sys.ptr(&n));
    if (sys.isErr(rc)) return ret(rc);
    return n;
}
