//! NETLINK_SOCK_DIAG for AF_UNIX: one request, and the raw reply stream copied
//! into the caller's buffer. Parsing and every decision about peers happen in
//! TypeScript (src/unix/diag.ts); this file only does the system calls.
const sys = @import("sys.zig");
const NR = sys.NR;

/// struct unix_diag_req (linux/unix_diag.h).
const UnixDiagReq = extern struct {
    family: u8,
    protocol: u8 = 0,
    pad: u16 = 0,
    states: u32,
    ino: u32,
    show: u32,
    cookie: [2]u32,
};

const Request = extern struct {
    hdr: sys.NlMsgHdr,
    req: UnixDiagReq,
};

const ENOSPC: i64 = 28;
const EPROTO: i64 = 71;

/// Asks for every AF_UNIX socket of the caller's network namespace (ino == 0)
/// or for the one with inode `ino` (then cookie [~0, ~0] skips the cookie
/// check), with the attributes in `show` (UDIAG_SHOW_*). Copies the replies,
/// whole netlink messages, into buf and returns the bytes used; the closing
/// NLMSG_DONE is not copied. -ENOSPC means buf was too small: the dump cannot
/// be resumed, so the caller retries from scratch with a bigger buffer. A
/// kernel NLMSG_ERROR comes back as its -errno (ENOENT: no such inode).
export fn ck_unix_diag(buf: [*]u8, len: usize, ino: u32, show: u32) i64 {
    const fd_rc = sys.syscall3(NR.socket, sys.AF_NETLINK, sys.SOCK_RAW | sys.SOCK_CLOEXEC, sys.NETLINK_SOCK_DIAG);
    if (sys.isErr(fd_rc)) return sys.signed(fd_rc);
    defer _ = sys.syscall1(NR.close, fd_rc);

    const dump = ino == 0;
    const seq: u32 = 0x636b7074; // "ckpt": replies to anything else are not ours
    var msg = Request{
        .hdr = .{
            .len = @sizeOf(Request),
            .type = sys.SOCK_DIAG_BY_FAMILY,
            .flags = sys.NLM_F_REQUEST | (if (dump) @as(u16, sys.NLM_F_DUMP) else 0),
            .seq = seq,
            .pid = 0,
        },
        .req = .{
            .family = sys.AF_UNIX,
            .states = 0xffff_ffff,
            .ino = ino,
            .show = show,
            .cookie = .{ 0xffff_ffff, 0xffff_ffff },
        },
    };
    var kernel = sys.SockaddrNl{ .family = sys.AF_NETLINK };
    const sent = sys.syscall6(NR.sendto, fd_rc, sys.ptr(&msg), @sizeOf(Request), 0, sys.ptr(&kernel), @sizeOf(sys.SockaddrNl));
    if (sys.isErr(sent)) return sys.signed(sent);

    return readReply(fd_rc, buf, len, seq);
}

/// Reads the kernel's netlink reply to request `seq` into buf: every part of
/// a multi-part answer up to NLMSG_DONE, or the one message of a single
/// answer. Returns the bytes that hold messages, or -errno (-ENOSPC when the
/// reply did not fit, the kernel's error for NLMSG_ERROR).
pub fn readReply(fd_rc: usize, buf: [*]u8, len: usize, seq: u32) i64 {
    var used: usize = 0;
    while (true) {
        const room = len - used;
        // MSG_TRUNC makes netlink report the datagram's full size, so a reply
        // that did not fit is detected instead of silently cut.
        const got_rc = sys.syscall6(NR.recvfrom, fd_rc, sys.ptr(buf + used), room, sys.MSG_TRUNC, 0, 0);
        if (sys.isErr(got_rc)) {
            if (sys.signed(got_rc) == -4) continue; // EINTR
            return sys.signed(got_rc);
        }
        const got: usize = got_rc;
        if (got > room) return -ENOSPC;
        if (got == 0) return -EPROTO;

        var off: usize = 0;
        while (off + @sizeOf(sys.NlMsgHdr) <= got) {
            const at = used + off;
            var h: sys.NlMsgHdr = undefined;
            @memcpy(@as([*]u8, @ptrCast(&h))[0..@sizeOf(sys.NlMsgHdr)], buf[at .. at + @sizeOf(sys.NlMsgHdr)]);
            if (h.len < @sizeOf(sys.NlMsgHdr) or off + h.len > got) return -EPROTO;
            if (h.seq != seq) return -EPROTO;
            if (h.type == sys.NLMSG_DONE) return @intCast(used + off);
            if (h.type == sys.NLMSG_ERROR) {
                if (h.len < @sizeOf(sys.NlMsgHdr) + 4) return -EPROTO;
                var err: i32 = undefined;
                const e = at + @sizeOf(sys.NlMsgHdr);
                @memcpy(@as([*]u8, @ptrCast(&err))[0..4], buf[e .. e + 4]);
                return if (err < 0) @as(i64, err) else -EPROTO;
            }
            // A single-socket reply is one message without NLM_F_MULTI.
            if (h.flags & sys.NLM_F_MULTI == 0) return @intCast(used + off + h.len);
            off += (h.len + 3) & ~@as(usize, 3);
        }
        used += got;
    }
}
