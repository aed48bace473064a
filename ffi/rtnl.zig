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

const NR_getdents64 = 217;
const O_NOFOLLOW = 0o400000;
const DT_DIR = 4;
const DT_REG = 8;

/// Every setting under the directory `root` (/proc/sys/net, as the calling
/// thread's network namespace shows it) that opens for reading and writing,
/// as records "relative/path\0value\0" in buf, in directory order. Files that
/// cannot be opened so (read-only ones) or read (unset secrets) are left out.
/// Returns the bytes used, -ENOSPC when buf is too small.
export fn ck_read_sysctls(root: [*:0]const u8, buf: [*]u8, len: usize) i64 {
    var path: [4096]u8 = undefined;
    const dfd = sys.syscall4(NR.openat, sys.int(@as(i32, -100)), sys.ptr(root), sys.O_RDONLY | sys.O_DIRECTORY | sys.O_CLOEXEC, 0);
    if (sys.isErr(dfd)) return sys.signed(dfd);
    var used: usize = 0;
    const rc = walk(@intCast(dfd), &path, 0, buf, len, &used, 0);
    _ = sys.syscall1(NR.close, dfd);
    if (rc < 0) return rc;
    return @intCast(used);
}

fn walk(dfd: i32, path: *[4096]u8, plen: usize, buf: [*]u8, len: usize, used: *usize, depth: usize) i64 {
    if (depth > 16) return 0;
    var ents: [8192]u8 align(8) = undefined;
    while (true) {
        const n_rc = sys.syscall3(NR_getdents64, sys.int(dfd), sys.ptr(&ents), ents.len);
        if (sys.isErr(n_rc)) return sys.signed(n_rc);
        const n: usize = n_rc;
        if (n == 0) return 0;
        var off: usize = 0;
        while (off + 19 < n) {
            const reclen = @as(u16, ents[off + 16]) | (@as(u16, ents[off + 17]) << 8);
            if (reclen == 0) return -EPROTO;
            const dtype = ents[off + 18];
            const name: [*:0]const u8 = @ptrCast(&ents[off + 19]);
            var nlen: usize = 0;
            while (name[nlen] != 0) nlen += 1;
            off += reclen;
            if (name[0] == '.' and (nlen == 1 or (nlen == 2 and name[1] == '.'))) continue;
            if (plen + nlen + 2 > path.len) continue;
            var p = plen;
            if (p > 0) {
                path[p] = '/';
                p += 1;
            }
            @memcpy(path[p .. p + nlen], name[0..nlen]);
            p += nlen;
            if (dtype == DT_DIR) {
                const sub = sys.syscall4(NR.openat, sys.int(dfd), sys.ptr(name), sys.O_RDONLY | sys.O_DIRECTORY | sys.O_CLOEXEC | O_NOFOLLOW, 0);
                if (sys.isErr(sub)) continue;
                const rc = walk(@intCast(sub), path, p, buf, len, used, depth + 1);
                _ = sys.syscall1(NR.close, sub);
                if (rc < 0) return rc;
                continue;
            }
            if (dtype != DT_REG) continue;
            const fd = sys.syscall4(NR.openat, sys.int(dfd), sys.ptr(name), sys.O_RDWR | sys.O_CLOEXEC | O_NOFOLLOW, 0);
            if (sys.isErr(fd)) continue;
            defer _ = sys.syscall1(NR.close, fd);
            // path\0 then the value read straight after it, then \0.
            if (used.* + p + 2 > len) return -ENOSPC;
            const start = used.*;
            @memcpy(buf[start .. start + p], path[0..p]);
            buf[start + p] = 0;
            var at = start + p + 1;
            var ok = true;
            while (true) {
                if (at >= len) return -ENOSPC;
                const got = sys.syscall3(NR.read, fd, sys.ptr(buf + at), len - at);
                if (sys.isErr(got)) {
                    ok = false;
                    break;
                }
                if (got == 0) break;
                at += got;
            }
            if (!ok) continue;
            if (at >= len) return -ENOSPC;
            buf[at] = 0;
            used.* = at + 1;
        }
    }
}
