//! Which pages a task has, and which it wrote since ckpt last looked: the
//! PAGEMAP_SCAN ioctl on /proc/PID/pagemap (ranges with categories, instead
//! of 8 bytes per page), and the task's own userfaultfd in asynchronous
//! write-protect mode, which ckpt sets up from outside once the task created
//! it (the ioctls act on the uffd's mm, not the caller's).
const sys = @import("sys.zig");
const NR = sys.NR;

pub const PmScanArg = extern struct {
    size: u64 = @sizeOf(PmScanArg),
    flags: u64 = 0,
    start: u64,
    end: u64,
    walk_end: u64 = 0,
    vec: u64 = 0,
    vec_len: u64 = 0,
    max_pages: u64 = 0,
    category_inverted: u64 = 0,
    category_mask: u64 = 0,
    category_anyof_mask: u64 = 0,
    return_mask: u64 = 0,
};

/// _IOWR('f', 16, struct pm_scan_arg)
const PAGEMAP_SCAN: usize = 0xc0606610;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 2;

/// One PAGEMAP_SCAN call: `q` holds [flags, start, end, category_inverted,
/// category_mask, category_anyof_mask, return_mask]; regions ([start, end,
/// categories] triples) go to vec; walk_end receives where the walk stopped
/// (short of end when vec filled up). Returns the number of regions.
export fn ck_pagemap_scan(pagemap_fd: i32, q: [*]const u64, vec: ?[*]u64, vec_len: u64, walk_end: *u64) i64 {
    var arg = PmScanArg{
        .flags = q[0],
        .start = q[1],
        .end = q[2],
        .category_inverted = q[3],
        .category_mask = q[4],
        .category_anyof_mask = q[5],
        .return_mask = q[6],
        .vec = if (vec) |v| sys.ptr(v) else 0,
        .vec_len = vec_len,
    };
    const rc = sys.syscall3(NR.ioctl, sys.int(pagemap_fd), PAGEMAP_SCAN, sys.ptr(&arg));
    walk_end.* = arg.walk_end;
    return sys.signed(rc);
}

/// Turns on asynchronous write-protect tracking on a fresh userfaultfd (the
/// kernel then clears a page's protection itself on its first write, and
/// PAGEMAP_SCAN reports it as written); returns 0 or -errno (EINVAL: this
/// kernel lacks UFFD_FEATURE_WP_ASYNC).
export fn ck_uffd_wp_async(uffd: i32) i64 {
    var api = sys.UffdioApi{ .api = sys.UFFD_API, .features = UFFD_FEATURE_WP_ASYNC, .ioctls = 0 };
    return sys.signed(sys.syscall3(NR.ioctl, sys.int(uffd), sys.UFFDIO_API, sys.ptr(&api)));
}

/// Registers [start, start+len) of the uffd's mm for write-protect tracking.
export fn ck_uffd_register_wp(uffd: i32, start: u64, len: u64) i64 {
    var reg = sys.UffdioRegister{ .range = .{ .start = start, .len = len }, .mode = UFFDIO_REGISTER_MODE_WP, .ioctls = 0 };
    return sys.signed(sys.syscall3(NR.ioctl, sys.int(uffd), sys.UFFDIO_REGISTER, sys.ptr(&reg)));
}
