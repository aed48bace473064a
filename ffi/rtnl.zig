//! Netlink requests for any protocol (rtnetlink for a network namespace's
//! links, addresses, routes and rules): a socket, and one request with its
//! whole reply stream copied into the caller's buffer. Building requests,
//! parsing replies and every decision happen in TypeScript (src/ns/net/);
//! this file only does the system calls. A netlink socket acts in the
//! network namespace its creator was in, whatever thread uses it later.
const sys = @import("sys.zig");
const NR = sys.NR;

const ENOSPC: i64 = 28;
const EPROTO: i64 = 71;
const SOL_NETLINK = 270;
const NETLINK_EXT_ACK = 11;
const NETLINK_GET_STRICT_CHK = 12;

/// A netlink socket of `protocol` in the calling thread's network namespace,
/// with extended acks (the kernel's reason for a refusal) and strict dump
/// checking (dumps honour the filters of the request header) asked for.
export fn ck_nl_socket(protocol: u32) i64 {
    const fd = sys.syscall3(NR.socket, sys.AF_NETLINK, sys.SOCK_RAW | sys.SOCK_CLOEXEC, protocol);
    if (sys.isErr(fd)) return sys.signed(fd);
    const one: u32 = 1;
    _ = sys.syscall5(NR.setsockopt, fd, SOL_NETLINK, NETLINK_EXT_ACK, sys.ptr(&one), 4);
    _ = sys.syscall5(NR.setsockopt, fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, sys.ptr(&one), 4);
    return @intCast(fd);
}

/// Sends the request in req (one netlink message; its seq is the one the
/// replies must carry) and copies every reply message into buf, up to and
/// including the one that ends it: NLMSG_DONE for a dump, NLMSG_ERROR (an
/// ack, or the error) otherwise. Returns the bytes used. -ENOSPC means buf
/// was too small: a dump cannot be resumed, so the caller asks again with a
/// bigger one.
export fn ck_nl_talk(fd: i32, req: [*]const u8, req_len: usize, buf: [*]u8, len: usize) i64 {
    if (req_len < @sizeOf(sys.NlMsgHdr)) return -EPROTO;
    var rh: sys.NlMsgHdr = undefined;
    @memcpy(@as([*]u8, @ptrCast(&rh))[0..@sizeOf(sys.NlMsgHdr)], req[0..@sizeOf(sys.NlMsgHdr)]);
    const dump = rh.flags & sys.NLM_F_DUMP == sys.NLM_F_DUMP;
    var kernel = sys.SockaddrNl{ .family = sys.AF_NETLINK };
    while (true) {
        const sent = sys.syscall6(NR.sendto, sys.int(fd), sys.ptr(req), req_len, 0, sys.ptr(&kernel), @sizeOf(sys.SockaddrNl));
        if (!sys.isErr(sent)) break;
        if (sys.signed(sent) != -4) return sys.signed(sent);
    }
    var used: usize = 0;
    while (true) {
        const room = len - used;
        // MSG_TRUNC makes netlink report the datagram's full size, so a reply
        // that did not fit is detected instead of silently cut.
        const got_rc = sys.syscall6(NR.recvfrom, sys.int(fd), sys.ptr(buf + used), room, sys.MSG_TRUNC, 0, 0);
        if (sys.isErr(got_rc)) {
            if (sys.signed(got_rc) == -4) continue; // EINTR
            return sys.signed(got_rc);
        }
        const got: usize = got_rc;
        if (got > room) return -ENOSPC;
        if (got == 0) return -EPROTO;
        var off: usize = 0;
        var keep: usize = 0;
        var end = false;
        while (off + @sizeOf(sys.NlMsgHdr) <= got) {
            const at = used + off;
            var h: sys.NlMsgHdr = undefined;
            @memcpy(@as([*]u8, @ptrCast(&h))[0..@sizeOf(sys.NlMsgHdr)], buf[at .. at + @sizeOf(sys.NlMsgHdr)]);
            if (h.len < @sizeOf(sys.NlMsgHdr) or off + h.len > got) return -EPROTO;
            const step = (h.len + 3) & ~@as(usize, 3);
            // Replies to an earlier request (an ack it did not wait for)
            // are dropped: only whole messages of this one are kept.
            if (h.seq == rh.seq) {
                if (keep != off) {
                    const n = @min(step, got - off);
                    var i: usize = 0;
                    while (i < n) : (i += 1) buf[used + keep + i] = buf[at + i];
                }
                keep += @min(step, got - off);
                if (h.type == sys.NLMSG_DONE or h.type == sys.NLMSG_ERROR) end = true;
                if (!dump and h.flags & sys.NLM_F_MULTI == 0 and h.type != sys.NLMSG_ERROR) {
                    // A single answer (a GET without DUMP) may come without
                    // an ack after it.
                    if (rh.flags & NLM_F_ACK == 0) end = true;
                }
            }
            if (end) break;
            off += step;
        }
        used += keep;
        if (end) return @intCast(used);
    }
}

const NLM_F_ACK = 0x4;
