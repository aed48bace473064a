//! Feature probes for `ckpt check`: each one exercises a kernel interface the
//! way dump or restore will, so "yes" means it really works here, not merely
//! that a header says it exists. The sock_diag code is a minimal private
//! request/parse, independent of the full sock_diag module.
const sys = @import("sys.zig");
const NR = sys.NR;

const EIO = 5;
const ECHILD = 10;
const EBADMSG = 74;
const page: usize = 4096;

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

fn neg(errno: i64) i64 {
    return -errno;
}

// ---- clone3 with set_tid -------------------------------------------------------

const CloneArgs = sys.CloneArgs;

/// Forks a child that must get exactly `pid`; it exits at once and is reaped
/// here. Returns the pid the kernel gave it (the caller compares), -EEXIST when
/// the pid is taken, or the clone3/wait4 error. The child is a fork of a
/// multi-threaded runtime: it makes one raw syscall and nothing else.
export fn ck_probe_clone3_set_tid(pid: i32) i64 {
    var want: i32 = pid;
    var args = CloneArgs{ .exit_signal = sys.SIGCHLD, .set_tid = sys.ptr(&want), .set_tid_size = 1 };
    const rc = sys.syscall2(NR.clone3, sys.ptr(&args), @sizeOf(CloneArgs));
    if (sys.isErr(rc)) return ret(rc);
    if (rc == 0) {
        while (true) _ = sys.syscall1(NR.exit_group, 0);
    }
    var status: i32 = 0;
    while (true) {
        const w = sys.syscall4(NR.wait4, rc, sys.ptr(&status), sys.WALL, 0);
        if (sys.signed(w) == -4) continue; // EINTR
        if (sys.isErr(w)) return ret(w);
        if (w != rc) return neg(ECHILD);
        break;
    }
    if (status != 0) return neg(EIO);
    return @intCast(rc);
}

// ---- userfaultfd -----------------------------------------------------------------

const UFFD_USER_MODE_ONLY = 1;
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: usize = 0xC018AA3F; // _IOWR(0xAA, 0x3F, struct uffdio_api)
const UffdioApi = extern struct { api: u64, features: u64, ioctls: u64 };

/// Opens a userfaultfd limited to user-mode faults (so no sysctl or extra
/// capability is involved) and handshakes the API. Asking for no feature makes
/// the kernel report every feature it supports.
export fn ck_probe_userfaultfd(features: *u64, ioctls: *u64) i64 {
    const fd = sys.syscall1(NR.userfaultfd, sys.O_CLOEXEC | sys.O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (sys.isErr(fd)) return ret(fd);
    defer _ = sys.syscall1(NR.close, fd);
    var api = UffdioApi{ .api = UFFD_API, .features = 0, .ioctls = 0 };
    const rc = sys.syscall3(NR.ioctl, fd, UFFDIO_API, sys.ptr(&api));
    if (sys.isErr(rc)) return ret(rc);
    features.* = api.features;
    ioctls.* = api.ioctls;
    return 0;
}

// ---- PAGEMAP_SCAN ------------------------------------------------------------------

const PAGEMAP_SCAN: usize = 0xC0606610; // _IOWR('f', 16, struct pm_scan_arg)
const PAGE_IS_PRESENT: u64 = 1 << 3;
const MADV_NOHUGEPAGE = 15;

const PmScanArg = extern struct {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
};
const PageRegion = extern struct { start: u64, end: u64, categories: u64 };

/// Maps four fresh pages, touches the first and the third, and asks
/// PAGEMAP_SCAN for present pages: the answer must be exactly those two, or
/// the ioctl cannot be trusted to find what a dump has to copy.
export fn ck_probe_pagemap_scan() i64 {
    const len = 4 * page;
    const base = sys.syscall6(NR.mmap, 0, len, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_PRIVATE | sys.MAP_ANONYMOUS, sys.int(@as(i32, -1)), 0);
    if (sys.isErr(base)) return ret(base);
    defer _ = sys.syscall2(NR.munmap, base, len);
    // A large folio would fault in all four pages at the first touch.
    _ = sys.syscall3(NR.madvise, base, len, MADV_NOHUGEPAGE);
    const mem: [*]volatile u8 = @ptrFromInt(base);
    mem[0] = 1;
    mem[2 * page] = 1;

    const fd = sys.syscall4(NR.openat, sys.int(@as(i32, -100)), sys.ptr("/proc/self/pagemap"), sys.O_RDONLY | sys.O_CLOEXEC, 0);
    if (sys.isErr(fd)) return ret(fd);
    defer _ = sys.syscall1(NR.close, fd);
    var regions: [4]PageRegion = undefined;
    var arg = PmScanArg{
        .size = @sizeOf(PmScanArg),
        .flags = 0,
        .start = base,
        .end = base + len,
        .walk_end = 0,
        .vec = sys.ptr(&regions),
        .vec_len = regions.len,
        .max_pages = 0,
        .category_inverted = 0,
        .category_mask = PAGE_IS_PRESENT,
        .category_anyof_mask = 0,
        .return_mask = PAGE_IS_PRESENT,
    };
    const n = sys.syscall3(NR.ioctl, fd, PAGEMAP_SCAN, sys.ptr(&arg));
    if (sys.isErr(n)) return ret(n);
    if (n != 2 or arg.walk_end != base + len) return neg(EBADMSG);
    if (regions[0].start != base or regions[0].end != base + page) return neg(EBADMSG);
    if (regions[1].start != base + 2 * page or regions[1].end != base + 3 * page) return neg(EBADMSG);
    if (regions[0].categories != PAGE_IS_PRESENT or regions[1].categories != PAGE_IS_PRESENT) return neg(EBADMSG);
    return @intCast(n);
}

// ---- sock_diag for UNIX sockets ----------------------------------------------------

const AF_UNIX = 1;
const AF_NETLINK = 16;
const SOCK_RAW = 3;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const UDIAG_SHOW_NAME = 0x1;
const UNIX_DIAG_NAME = 0;

const SockaddrNl = extern struct { family: u16 = AF_NETLINK, pad: u16 = 0, pid: u32 = 0, groups: u32 = 0 };
const NlMsgHdr = extern struct { len: u32, type: u16, flags: u16, seq: u32, pid: u32 };
const UnixDiagReq = extern struct {
    family: u8,
    protocol: u8,
    pad: u16,
    states: u32,
    ino: u32,
    show: u32,
    cookie: [2]u32,
};
const UnixDiagMsg = extern struct { family: u8, type: u8, state: u8, pad: u8, ino: u32, cookie: [2]u32 };
const RtAttr = extern struct { len: u16, type: u16 };

fn align4(v: usize) usize {
    return (v + 3) & ~@as(usize, 3);
}

fn at(comptime T: type, buf: []align(8) u8, off: usize) *align(4) T {
    return @ptrCast(@alignCast(buf.ptr + off));
}

/// Dumps every UNIX socket of this network namespace with names and checks
/// that each reply is well formed (lengths, family, attributes). Returns the
/// number of sockets; out[0] = how many carried a name attribute, out[1] = 1
/// when socket inode `want_ino` was among them with a name. -EBADMSG for a
/// malformed reply, or the errno the kernel reported.
export fn ck_probe_unix_diag(want_ino: u32, out: *[2]u32) i64 {
    out.* = .{ 0, 0 };
    const fd = sys.syscall3(NR.socket, AF_NETLINK, SOCK_RAW | sys.O_CLOEXEC, NETLINK_SOCK_DIAG);
    if (sys.isErr(fd)) return ret(fd);
    defer _ = sys.syscall1(NR.close, fd);

    const seq: u32 = 0x636b7074; // "ckpt"
    const Request = extern struct { hdr: NlMsgHdr, req: UnixDiagReq };
    var msg = Request{
        .hdr = .{ .len = @sizeOf(Request), .type = SOCK_DIAG_BY_FAMILY, .flags = NLM_F_REQUEST | NLM_F_DUMP, .seq = seq, .pid = 0 },
        .req = .{ .family = AF_UNIX, .protocol = 0, .pad = 0, .states = 0xffffffff, .ino = 0, .show = UDIAG_SHOW_NAME, .cookie = .{ 0xffffffff, 0xffffffff } },
    };
    var kernel = SockaddrNl{};
    const sent = sys.syscall6(NR.sendto, fd, sys.ptr(&msg), @sizeOf(Request), 0, sys.ptr(&kernel), @sizeOf(SockaddrNl));
    if (sys.isErr(sent)) return ret(sent);

    var buf: [32768]u8 align(8) = undefined;
    var count: i64 = 0;
    while (true) {
        const got = sys.syscall6(NR.recvfrom, fd, sys.ptr(&buf), buf.len, 0, 0, 0);
        if (sys.signed(got) == -4) continue; // EINTR
        if (sys.isErr(got)) return ret(got);
        if (got == 0) return neg(EBADMSG);
        var off: usize = 0;
        while (off < got) {
            if (got - off < @sizeOf(NlMsgHdr)) return neg(EBADMSG);
            const h = at(NlMsgHdr, &buf, off);
            if (h.len < @sizeOf(NlMsgHdr) or h.len > got - off or h.seq != seq) return neg(EBADMSG);
            switch (h.type) {
                NLMSG_DONE => return count,
                NLMSG_ERROR => {
                    if (h.len < @sizeOf(NlMsgHdr) + 4) return neg(EBADMSG);
                    const err = at(i32, &buf, off + @sizeOf(NlMsgHdr)).*;
                    return if (err < 0) err else neg(EBADMSG);
                },
                SOCK_DIAG_BY_FAMILY => {
                    const body = off + @sizeOf(NlMsgHdr);
                    const end = off + h.len;
                    if (end - body < @sizeOf(UnixDiagMsg)) return neg(EBADMSG);
                    const m = at(UnixDiagMsg, &buf, body);
                    if (m.family != AF_UNIX) return neg(EBADMSG);
                    var a = body + @sizeOf(UnixDiagMsg);
                    var has_name = false;
                    while (a + @sizeOf(RtAttr) <= end) {
                        const attr = at(RtAttr, &buf, a);
                        if (attr.len < @sizeOf(RtAttr) or attr.len > end - a) return neg(EBADMSG);
                        if (attr.type == UNIX_DIAG_NAME) has_name = true;
                        a += align4(attr.len);
                    }
                    if (has_name) {
                        out[0] += 1;
                        if (m.ino == want_ino) out[1] = 1;
                    }
                    count += 1;
                },
                else => return neg(EBADMSG),
            }
            off += align4(h.len);
        }
    }
}
