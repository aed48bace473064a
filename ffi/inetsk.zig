//! Inet and netlink sockets: sock_diag queries with a request TypeScript
//! builds, recvmsg with the raw control data, the TCP repair sequences
//! (reading a live connection's state, rebuilding it in a new socket), raw IP
//! packets sent past the connection lock, and the watchdog that takes the lock
//! down if ckpt dies during a dump. Which connection needs what, and every
//! sequence number adjustment, is decided in TypeScript (src/net/).
const sys = @import("sys.zig");
const sockdiag = @import("sockdiag.zig");
const NR = sys.NR;

const NR_connect = 42;
const NR_bind = 49;
const NR_shutdown = 48;
const NR_execve = 59;
const NR_sendto = 44;

const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_MARK = 36;
const SO_PEEK_OFF = 42;
const SOL_TCP = 6;
const TCP_MAXSEG = 2;
const TCP_INFO = 11;
const TCP_REPAIR = 19;
const TCP_REPAIR_QUEUE = 20;
const TCP_QUEUE_SEQ = 21;
const TCP_REPAIR_OPTIONS = 22;
const TCP_TIMESTAMP = 24;
const TCP_REPAIR_WINDOW = 29;
const TCP_NO_QUEUE = 0;
const TCP_RECV_QUEUE = 1;
const TCP_SEND_QUEUE = 2;
const REPAIR_ON: i32 = 1;
const REPAIR_OFF_NO_WP: i32 = -1;
const TCPI_OPT_TIMESTAMPS = 1;
const SIOCINQ = 0x541B;
const SIOCOUTQ = 0x5411;
const SIOCOUTQNSD = 0x894B;
const MSG_PEEK = 2;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const AF_INET6 = 10;
const IPPROTO_RAW = 255;
const IPPROTO_IPV6 = 41;
const IPV6_HDRINCL = 36;
const ENOSPC: i64 = 28;
const ENOMEM: i64 = 12;
const EPROTO: i64 = 71;
const EINPROGRESS: i64 = 115;

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

fn setInt(fd: i32, level: i32, name: i32, v: i32) usize {
    var val = v;
    return sys.syscall5(NR.setsockopt, sys.int(fd), sys.int(level), sys.int(name), sys.ptr(&val), 4);
}

fn getInt(fd: i32, level: i32, name: i32, out: *u32) usize {
    var len: u32 = 4;
    return sys.syscall5(NR.getsockopt, sys.int(fd), sys.int(level), sys.int(name), sys.ptr(out), sys.ptr(&len));
}

fn ioctlInt(fd: i32, req: usize, out: *u32) usize {
    var v: i32 = 0;
    const rc = sys.syscall3(NR.ioctl, sys.int(fd), req, sys.ptr(&v));
    out.* = @bitCast(v);
    return rc;
}

// ---- sock_diag ---------------------------------------------------------------

/// One NETLINK_SOCK_DIAG request whose body (inet_diag_req_v2,
/// netlink_diag_req…) the caller built; the replies, whole netlink messages,
/// are copied into buf and the bytes used returned (NLMSG_DONE not copied).
/// -ENOSPC: buf too small (a dump cannot be resumed; retry bigger). A kernel
/// NLMSG_ERROR comes back as its -errno.
export fn ck_sock_diag(req: [*]const u8, req_len: u32, dump: u32, buf: [*]u8, len: usize) i64 {
    if (req_len > 256) return -22;
    const fd_rc = sys.syscall3(NR.socket, sys.AF_NETLINK, sys.SOCK_RAW | sys.SOCK_CLOEXEC, sys.NETLINK_SOCK_DIAG);
    if (sys.isErr(fd_rc)) return sys.signed(fd_rc);
    defer _ = sys.syscall1(NR.close, fd_rc);

    const seq: u32 = 0x636b7075;
    var msg: extern struct { hdr: sys.NlMsgHdr, body: [256]u8 } = undefined;
    msg.hdr = .{
        .len = @sizeOf(sys.NlMsgHdr) + req_len,
        .type = sys.SOCK_DIAG_BY_FAMILY,
        .flags = sys.NLM_F_REQUEST | (if (dump != 0) @as(u16, sys.NLM_F_DUMP) else 0),
        .seq = seq,
        .pid = 0,
    };
    @memcpy(msg.body[0..req_len], req[0..req_len]);
    var kernel = sys.SockaddrNl{ .family = sys.AF_NETLINK };
    const sent = sys.syscall6(NR.sendto, fd_rc, sys.ptr(&msg), msg.hdr.len, 0, sys.ptr(&kernel), @sizeOf(sys.SockaddrNl));
    if (sys.isErr(sent)) return sys.signed(sent);

    return sockdiag.readReply(fd_rc, buf, len, seq);
}

// ---- recvmsg with control data ---------------------------------------------------

const MsgHdr = extern struct {
    name: usize,
    namelen: u32,
    iov: *const sys.Iovec,
    iovlen: usize,
    control: usize,
    controllen: usize,
    flags: i32,
};

/// One recvmsg: data into buf, the sender's address into addr (addrlen
/// in/out), the control messages, raw, into ctl (ctllen in/out), msg_flags
/// into out_flags. The caller parses the cmsgs.
export fn ck_recvmsg_raw(fd: i32, buf: [*]u8, len: usize, addr: [*]u8, addrlen: *u32, ctl: [*]u8, ctllen: *u32, flags: i32, out_flags: *i32) i64 {
    const iov = sys.Iovec{ .base = sys.ptr(buf), .len = len };
    var msg = MsgHdr{
        .name = sys.ptr(addr),
        .namelen = addrlen.*,
        .iov = &iov,
        .iovlen = 1,
        .control = sys.ptr(ctl),
        .controllen = ctllen.*,
        .flags = 0,
    };
    const rc = sys.syscall3(NR.recvmsg, sys.int(fd), sys.ptr(&msg), sys.int(flags));
    if (sys.isErr(rc)) return ret(rc);
    addrlen.* = msg.namelen;
    ctllen.* = @intCast(msg.controllen);
    out_flags.* = msg.flags;
    return ret(rc);
}

// ---- TCP repair --------------------------------------------------------------------

/// What a connection's repair-mode reading gives (the kernel's own values,
/// unadjusted: TypeScript accounts for FINs). Shared layout with
/// src/native/inetsk.ts (TCP_STATE_FIELDS), all u32.
pub const TcpState = extern struct {
    state: u32 = 0, // tcpi_state
    options: u32 = 0, // tcpi_options (TCPI_OPT_*)
    snd_wscale: u32 = 0,
    rcv_wscale: u32 = 0,
    inq_len: u32 = 0, // SIOCINQ: bytes not read yet
    outq_len: u32 = 0, // SIOCOUTQ: write_seq - snd_una (a queued FIN counts 1)
    unsq_len: u32 = 0, // SIOCOUTQNSD: write_seq - snd_nxt
    inq_seq: u32 = 0, // TCP_QUEUE_SEQ of the receive queue: rcv_nxt
    outq_seq: u32 = 0, // TCP_QUEUE_SEQ of the send queue: write_seq
    mss_clamp: u32 = 0,
    timestamp: u32 = 0,
    has_window: u32 = 0,
    snd_wl1: u32 = 0,
    snd_wnd: u32 = 0,
    max_window: u32 = 0,
    rcv_wnd: u32 = 0,
    rcv_wup: u32 = 0,
    rq_got: u32 = 0, // bytes the receive queue peek returned
    sq_got: u32 = 0, // bytes the send queue peek returned
    step: u32 = 0, // the step that failed (restore: which call)
};

const TcpInfoHead = extern struct {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    flags: u8,
};

const RepairWindow = extern struct {
    snd_wl1: u32,
    snd_wnd: u32,
    max_window: u32,
    rcv_wnd: u32,
    rcv_wup: u32,
};

fn peek(fd: i32, buf: [*]u8, cap: usize) usize {
    if (cap == 0) return 0;
    return sys.syscall6(NR.recvfrom, sys.int(fd), sys.ptr(buf), cap, MSG_PEEK | MSG_DONTWAIT, 0, 0);
}

/// Reads an established (or half-closed) connection through fd, a copy of
/// the task's: queue sizes, then in repair mode sequence numbers, MSS clamp,
/// timestamp, window and both queues' bytes (peeked, not consumed), then
/// leaves repair mode again without a window probe and puts SO_REUSEADDR and
/// SO_PEEK_OFF back (leaving repair clears the one; peeking moves the other).
/// The connection must be locked: nothing may change it meanwhile. -ENOSPC:
/// a queue is bigger than its buffer (st has the sizes; retry). On failure
/// st.step says which step.
export fn ck_tcp_save(fd: i32, st: *TcpState, rq: [*]u8, rq_cap: usize, sq: [*]u8, sq_cap: usize) i64 {
    st.* = .{};
    var info: TcpInfoHead = undefined;
    var ilen: u32 = @sizeOf(TcpInfoHead);
    st.step = 1;
    var rc = sys.syscall5(NR.getsockopt, sys.int(fd), SOL_TCP, TCP_INFO, sys.ptr(&info), sys.ptr(&ilen));
    if (sys.isErr(rc)) return ret(rc);
    st.state = info.state;
    st.options = info.options;
    st.snd_wscale = info.wscale & 0xf;
    st.rcv_wscale = info.wscale >> 4;
    st.step = 2;
    rc = ioctlInt(fd, SIOCINQ, &st.inq_len);
    if (sys.isErr(rc)) return ret(rc);
    rc = ioctlInt(fd, SIOCOUTQ, &st.outq_len);
    if (sys.isErr(rc)) return ret(rc);
    rc = ioctlInt(fd, SIOCOUTQNSD, &st.unsq_len);
    if (sys.isErr(rc)) return ret(rc);
    if (st.inq_len > rq_cap or st.outq_len > sq_cap) return -ENOSPC;

    var reuse: u32 = 0;
    var peek_off: u32 = 0;
    st.step = 3;
    rc = getInt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse);
    if (sys.isErr(rc)) return ret(rc);
    rc = getInt(fd, SOL_SOCKET, SO_PEEK_OFF, &peek_off);
    const has_peek_off = !sys.isErr(rc);
    st.step = 4;
    rc = setInt(fd, SOL_TCP, TCP_REPAIR, REPAIR_ON);
    if (sys.isErr(rc)) return ret(rc);
    const out = saveRepaired(fd, st, rq, rq_cap, sq, sq_cap, has_peek_off);
    _ = setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
    const off = setInt(fd, SOL_TCP, TCP_REPAIR, REPAIR_OFF_NO_WP);
    _ = setInt(fd, SOL_SOCKET, SO_REUSEADDR, @bitCast(reuse));
    if (has_peek_off) _ = setInt(fd, SOL_SOCKET, SO_PEEK_OFF, @bitCast(peek_off));
    if (out < 0) return out;
    if (sys.isErr(off)) {
        st.step = 12;
        return ret(off);
    }
    return 0;
}

fn saveRepaired(fd: i32, st: *TcpState, rq: [*]u8, rq_cap: usize, sq: [*]u8, sq_cap: usize, has_peek_off: bool) i64 {
    st.step = 5;
    var rc = getInt(fd, SOL_TCP, TCP_MAXSEG, &st.mss_clamp);
    if (sys.isErr(rc)) return ret(rc);
    if (st.options & TCPI_OPT_TIMESTAMPS != 0) {
        st.step = 6;
        rc = getInt(fd, SOL_TCP, TCP_TIMESTAMP, &st.timestamp);
        if (sys.isErr(rc)) return ret(rc);
    }
    var w: RepairWindow = undefined;
    var wlen: u32 = @sizeOf(RepairWindow);
    st.step = 7;
    rc = sys.syscall5(NR.getsockopt, sys.int(fd), SOL_TCP, TCP_REPAIR_WINDOW, sys.ptr(&w), sys.ptr(&wlen));
    if (!sys.isErr(rc)) {
        st.has_window = 1;
        st.snd_wl1 = w.snd_wl1;
        st.snd_wnd = w.snd_wnd;
        st.max_window = w.max_window;
        st.rcv_wnd = w.rcv_wnd;
        st.rcv_wup = w.rcv_wup;
    } else if (sys.signed(rc) != -92) return ret(rc); // ENOPROTOOPT: a kernel before 4.8

    // A peek offset the task set would make the receive queue peek start late.
    if (has_peek_off) _ = setInt(fd, SOL_SOCKET, SO_PEEK_OFF, -1);
    st.step = 8;
    rc = setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
    if (sys.isErr(rc)) return ret(rc);
    rc = getInt(fd, SOL_TCP, TCP_QUEUE_SEQ, &st.inq_seq);
    if (sys.isErr(rc)) return ret(rc);
    if (st.inq_len > 0) {
        st.step = 9;
        // One byte more than expected: a longer queue shows as a mismatch.
        rc = peek(fd, rq, @min(rq_cap, @as(usize, st.inq_len) + 1));
        if (sys.isErr(rc)) return ret(rc);
        st.rq_got = @intCast(rc);
    }
    st.step = 10;
    rc = setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
    if (sys.isErr(rc)) return ret(rc);
    rc = getInt(fd, SOL_TCP, TCP_QUEUE_SEQ, &st.outq_seq);
    if (sys.isErr(rc)) return ret(rc);
    if (st.outq_len > 0) {
        st.step = 11;
        // The send queue peek copies whole buffers: the room must hold them all.
        rc = peek(fd, sq, sq_cap);
        if (sys.isErr(rc)) {
            if (sys.signed(rc) == -11) return 0; // EAGAIN: only a FIN is queued
            return ret(rc);
        }
        st.sq_got = @intCast(rc);
    }
    return 0;
}

/// What ck_tcp_restore does, every value decided by TypeScript.
pub const TcpRestore = extern struct {
    recv_seq: u32, // TCP_QUEUE_SEQ of the receive queue, before the queued bytes
    send_seq: u32, // TCP_QUEUE_SEQ of the send queue: snd_una
    options: u32, // TCPI_OPT_* to repair
    snd_wscale: u32,
    rcv_wscale: u32,
    mss_clamp: u32,
    timestamp: u32,
    has_window: u32,
    snd_wl1: u32,
    snd_wnd: u32,
    max_window: u32,
    rcv_wnd: u32,
    rcv_wup: u32,
    step: u32, // out: the step that failed
};

const RepairOpt = extern struct { code: u32, val: u32 };

fn sendAll(fd: i32, data: [*]const u8, len: usize) usize {
    var off: usize = 0;
    var chunk: usize = len;
    while (off < len) {
        const n = @min(chunk, len - off);
        const rc = sys.syscall6(NR_sendto, sys.int(fd), sys.ptr(data + off), n, MSG_DONTWAIT | MSG_NOSIGNAL, 0, 0);
        if (sys.isErr(rc)) {
            // The receive queue is restored as one linear buffer per call: a
            // big one can fail to allocate where smaller ones do.
            if (sys.signed(rc) == -ENOMEM and chunk > 1024) {
                chunk >>= 1;
                continue;
            }
            return rc;
        }
        if (rc == 0) return @bitCast(@as(isize, -ENOSPC));
        off += rc;
    }
    return 0;
}

/// Rebuilds a connection in fd, a new TCP socket (pre-bind options already
/// set): repair mode, bind to local, both queue sequence numbers, connect in
/// repair mode (no packet leaves), TCP options, timestamp, the receive queue's
/// bytes, the sent and unacknowledged bytes (as sent), the window. The socket
/// is left in repair mode; the bytes never sent and the FINs are done after
/// (see src/net/tcp_repair.ts). On failure r.step says which step.
export fn ck_tcp_restore(fd: i32, r: *TcpRestore, local: [*]const u8, local_len: u32, peer: [*]const u8, peer_len: u32, rq: [*]const u8, rq_len: usize, sq: [*]const u8, sq_len: usize) i64 {
    r.step = 1;
    var rc = setInt(fd, SOL_TCP, TCP_REPAIR, REPAIR_ON);
    if (sys.isErr(rc)) return ret(rc);
    r.step = 2;
    rc = sys.syscall3(NR_bind, sys.int(fd), sys.ptr(local), local_len);
    if (sys.isErr(rc)) return ret(rc);
    r.step = 3;
    rc = setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
    if (sys.isErr(rc)) return ret(rc);
    rc = setInt(fd, SOL_TCP, TCP_QUEUE_SEQ, @bitCast(r.recv_seq));
    if (sys.isErr(rc)) return ret(rc);
    r.step = 4;
    rc = setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
    if (sys.isErr(rc)) return ret(rc);
    rc = setInt(fd, SOL_TCP, TCP_QUEUE_SEQ, @bitCast(r.send_seq));
    if (sys.isErr(rc)) return ret(rc);
    r.step = 5;
    rc = sys.syscall3(NR_connect, sys.int(fd), sys.ptr(peer), peer_len);
    if (sys.isErr(rc) and sys.signed(rc) != -EINPROGRESS) return ret(rc);

    var opts: [4]RepairOpt = undefined;
    var n: usize = 0;
    if (r.options & 2 != 0) { // TCPI_OPT_SACK
        opts[n] = .{ .code = 4, .val = 0 }; // TCPOPT_SACK_PERM
        n += 1;
    }
    if (r.options & 4 != 0) { // TCPI_OPT_WSCALE
        opts[n] = .{ .code = 3, .val = r.snd_wscale | (r.rcv_wscale << 16) }; // TCPOPT_WINDOW
        n += 1;
    }
    if (r.options & TCPI_OPT_TIMESTAMPS != 0) {
        opts[n] = .{ .code = 8, .val = 0 }; // TCPOPT_TIMESTAMP
        n += 1;
    }
    opts[n] = .{ .code = 2, .val = r.mss_clamp }; // TCPOPT_MAXSEG
    n += 1;
    r.step = 6;
    rc = sys.syscall5(NR.setsockopt, sys.int(fd), SOL_TCP, TCP_REPAIR_OPTIONS, sys.ptr(&opts), n * @sizeOf(RepairOpt));
    if (sys.isErr(rc)) return ret(rc);
    if (r.options & TCPI_OPT_TIMESTAMPS != 0) {
        r.step = 7;
        rc = setInt(fd, SOL_TCP, TCP_TIMESTAMP, @bitCast(r.timestamp));
        if (sys.isErr(rc)) return ret(rc);
    }
    if (rq_len > 0) {
        r.step = 8;
        rc = setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
        if (sys.isErr(rc)) return ret(rc);
        rc = sendAll(fd, rq, rq_len);
        if (sys.isErr(rc)) return ret(rc);
    }
    if (sq_len > 0) {
        // Bytes sent before the dump and not acknowledged: queued as sent
        // (nothing leaves), so the peer's acknowledgements of them are valid.
        r.step = 11;
        rc = setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
        if (sys.isErr(rc)) return ret(rc);
        rc = sendAll(fd, sq, sq_len);
        if (sys.isErr(rc)) return ret(rc);
    }
    if (r.has_window != 0) {
        r.step = 9;
        const w = RepairWindow{ .snd_wl1 = r.snd_wl1, .snd_wnd = r.snd_wnd, .max_window = r.max_window, .rcv_wnd = r.rcv_wnd, .rcv_wup = r.rcv_wup };
        rc = sys.syscall5(NR.setsockopt, sys.int(fd), SOL_TCP, TCP_REPAIR_WINDOW, sys.ptr(&w), @sizeOf(RepairWindow));
        if (sys.isErr(rc)) return ret(rc);
    }
    r.step = 10;
    rc = setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
    if (sys.isErr(rc)) return ret(rc);
    return 0;
}

/// shutdown(SHUT_WR) in repair mode with the FIN marked as already sent
/// (queue = TCP_SEND_QUEUE) or really sent (TCP_NO_QUEUE).
export fn ck_tcp_repair_fin(fd: i32, queue: i32) i64 {
    var rc = setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, queue);
    if (sys.isErr(rc)) return ret(rc);
    rc = sys.syscall2(NR_shutdown, sys.int(fd), 1);
    _ = setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
    return ret(rc);
}

/// Sends len bytes through fd without blocking, as many calls as it takes.
export fn ck_send_all(fd: i32, data: [*]const u8, len: usize) i64 {
    return ret(sendAll(fd, data, len));
}

// ---- raw packets ---------------------------------------------------------------------

/// Sends one complete IP packet (header included, built by TypeScript) from
/// a raw socket marked `mark`, which the connection lock lets through: the
/// FIN or ACK a half-closed connection's restore needs, a reset, a queued
/// datagram given back with its sender's address. dst is the sockaddr the
/// packet goes to (its destination address).
export fn ck_raw_send(family: i32, pkt: [*]const u8, len: usize, dst: [*]const u8, dst_len: u32, mark: u32) i64 {
    const s = sys.syscall3(NR.socket, sys.int(family), sys.SOCK_RAW | sys.SOCK_CLOEXEC, IPPROTO_RAW);
    if (sys.isErr(s)) return ret(s);
    defer _ = sys.syscall1(NR.close, s);
    const fd: i32 = @intCast(s);
    var rc = setInt(fd, SOL_SOCKET, SO_MARK, @bitCast(mark));
    if (sys.isErr(rc)) return ret(rc);
    if (family == AF_INET6) {
        rc = setInt(fd, IPPROTO_IPV6, IPV6_HDRINCL, 1);
        if (sys.isErr(rc)) return ret(rc);
    }
    return ret(sys.syscall6(NR_sendto, s, sys.ptr(pkt), len, MSG_NOSIGNAL, sys.ptr(dst), dst_len));
}

// ---- the lock watchdog ----------------------------------------------------------------

const SIGPIPE = 13;
const POLLIN = 1;
const WEXITED = 4;

const KSigaction = extern struct { handler: usize, flags: u64, restorer: usize, mask: u64 };
const PollFd = extern struct { fd: i32, events: i16, revents: i16 };

/// Runs argv (NUL-separated strings, argc of them; argv[0] a full path) and
/// waits for it: its exit status, or 255 if it could not run.
fn run(argv_buf: [*]const u8, argc: u32, envp: [*]const ?[*:0]const u8) u8 {
    var argv: [16:null]?[*:0]const u8 = @splat(null);
    var p: [*]const u8 = argv_buf;
    var i: usize = 0;
    while (i < argc and i < 15) : (i += 1) {
        argv[i] = @ptrCast(p);
        while (p[0] != 0) p += 1;
        p += 1;
    }
    const pid = sys.syscall0(NR.fork);
    if (sys.isErr(pid)) return 255;
    if (pid == 0) {
        _ = sys.syscall3(NR_execve, sys.ptr(argv[0].?), sys.ptr(&argv), sys.ptr(envp));
        _ = sys.syscall1(NR.exit_group, 127);
        unreachable;
    }
    var status: i32 = 0;
    while (true) {
        const w = sys.syscall4(NR.wait4, pid, sys.ptr(&status), 0, 0);
        if (!sys.isErr(w)) break;
        if (sys.signed(w) != -4) return 255;
    }
    if (status & 0x7f != 0) return 254;
    return @intCast((status >> 8) & 0xff);
}

fn report(fd: i32, code: u8) void {
    var b = code;
    _ = sys.syscall3(NR.write, sys.int(fd), sys.ptr(&b), 1);
}

/// Whether every pidfd's process has exited (each readable), waiting up to
/// ms for the last ones: a tree being killed is dying, not running on.
fn allExited(pidfds: [*]const i32, n: u32, ms: i32) bool {
    if (n == 0) return false;
    var waited: i32 = 0;
    while (true) {
        var dead: u32 = 0;
        for (0..n) |i| {
            var p = PollFd{ .fd = pidfds[i], .events = POLLIN, .revents = 0 };
            const rc = sys.syscall3(NR.poll, sys.ptr(&p), 1, 0);
            if (!sys.isErr(rc) and rc == 1) dead += 1;
        }
        if (dead == n) return true;
        if (dead == 0 or waited >= ms) return false;
        const ts = extern struct { s: i64, ns: i64 }{ .s = 0, .ns = 10_000_000 };
        _ = sys.syscall2(NR.nanosleep, sys.ptr(&ts), 0);
        waited += 10;
    }
}

/// Forks the watchdog of one dump's connection lock and returns its pid.
/// It reads commands from cmd_fd and answers each with one status byte on
/// status_fd: 'L' runs lock_argv (installs the lock) and stays; 'U' takes
/// the lock down and exits; 'K' exits leaving the lock (the dump is done
/// and the tree is gone: restore removes it). When cmd_fd reaches end of
/// file without 'K' or 'U' (ckpt died), the lock goes as for 'U' — unless
/// every task of the tree (pidfds) has exited, which means ckpt died after
/// killing it at the end of a complete dump. Taking the lock down: each
/// socket copy (sock_fds) leaves repair mode (nothing is sent) and gets
/// SO_REUSEADDR back (reuse), then unlock_argv runs. The child runs raw
/// system calls only (a fork of a multi-threaded runtime) and keeps no fd
/// but those it is given.
export fn ck_netlock_watchdog(
    cmd_fd: i32,
    status_fd: i32,
    lock_argv: [*]const u8,
    lock_argc: u32,
    unlock_argv: [*]const u8,
    unlock_argc: u32,
    env: [*]const u8,
    sock_fds: [*]const i32,
    reuse: [*]const i32,
    n_socks: u32,
    pidfds: [*]const i32,
    n_pidfds: u32,
) i64 {
    const pid = sys.syscall0(NR.fork);
    if (sys.isErr(pid)) return ret(pid);
    if (pid != 0) return @intCast(pid);

    _ = sys.syscall0(NR.setsid);
    var ign = KSigaction{ .handler = 1, .flags = 0, .restorer = 0, .mask = 0 }; // SIG_IGN
    _ = sys.syscall4(NR.rt_sigaction, SIGPIPE, sys.ptr(&ign), 0, 8);
    var empty: u64 = 0;
    _ = sys.syscall4(NR.rt_sigprocmask, 2, sys.ptr(&empty), 0, 8); // SIG_SETMASK
    closeAllBut(cmd_fd, status_fd, sock_fds, n_socks, pidfds, n_pidfds);

    const envp = [_:null]?[*:0]const u8{ @ptrCast(env), null };
    while (true) {
        var c: u8 = 0;
        const got = sys.syscall3(NR.read, sys.int(cmd_fd), sys.ptr(&c), 1);
        if (sys.isErr(got) and sys.signed(got) == -4) continue;
        if (!sys.isErr(got) and got == 1 and c == 'L') {
            report(status_fd, run(lock_argv, lock_argc, &envp));
            continue;
        }
        if (!sys.isErr(got) and got == 1 and c == 'K') {
            report(status_fd, 0);
            _ = sys.syscall1(NR.exit_group, 0);
        }
        const ordered = !sys.isErr(got) and got == 1 and c == 'U';
        if (!ordered and allExited(pidfds, n_pidfds, 500)) _ = sys.syscall1(NR.exit_group, 0);
        for (0..n_socks) |i| {
            _ = setInt(sock_fds[i], SOL_TCP, TCP_REPAIR, REPAIR_OFF_NO_WP);
            _ = setInt(sock_fds[i], SOL_SOCKET, SO_REUSEADDR, reuse[i]);
        }
        const code = run(unlock_argv, unlock_argc, &envp);
        report(status_fd, code);
        _ = sys.syscall1(NR.exit_group, code);
    }
}

fn keeps(fd: usize, cmd_fd: i32, status_fd: i32, a: [*]const i32, na: u32, b: [*]const i32, nb: u32) bool {
    if (fd <= 2 or fd == @as(usize, @intCast(cmd_fd)) or fd == @as(usize, @intCast(status_fd))) return true;
    for (0..na) |i| if (a[i] >= 0 and fd == @as(usize, @intCast(a[i]))) return true;
    for (0..nb) |i| if (b[i] >= 0 and fd == @as(usize, @intCast(b[i]))) return true;
    return false;
}

/// Closes every descriptor but stdio and those listed: the watchdog must
/// not keep ckpt's locks or images open after ckpt.
fn closeAllBut(cmd_fd: i32, status_fd: i32, a: [*]const i32, na: u32, b: [*]const i32, nb: u32) void {
    // stdin and stdout become /dev/null: ckpt's stdout may be a dump stream,
    // which must reach its end of file when ckpt is done, and nft must not
    // write into it. stderr stays, for nft's errors.
    const null_fd = sys.syscall4(NR.openat, sys.int(@as(i32, -100)), sys.ptr("/dev/null"), sys.O_RDWR, 0);
    if (!sys.isErr(null_fd)) {
        _ = sys.syscall2(NR.dup2, null_fd, 0);
        _ = sys.syscall2(NR.dup2, null_fd, 1);
        if (null_fd > 2) _ = sys.syscall1(NR.close, null_fd);
    }
    var max: usize = @intCast(@max(cmd_fd, status_fd));
    for (0..na) |i| max = @max(max, @as(usize, @intCast(@max(a[i], 0))));
    for (0..nb) |i| max = @max(max, @as(usize, @intCast(@max(b[i], 0))));
    var fd: usize = 3;
    while (fd <= max) : (fd += 1) {
        if (!keeps(fd, cmd_fd, status_fd, a, na, b, nb)) _ = sys.syscall1(NR.close, fd);
    }
    _ = sys.syscall3(NR.close_range, max + 1, 0xffff_ffff, 0);
}

// ---- many options at once --------------------------------------------------------------

const OptSpec = extern struct { level: i32, name: i32, len: u32 };

/// getsockopt for each of n specs: values one after another in out (each
/// spec's len bytes reserved), lens[i] the length returned or -errno. One
/// call per socket instead of one per option.
export fn ck_getsockopts(fd: i32, specs: [*]const OptSpec, n: u32, out: [*]u8, lens: [*]i32) void {
    var off: usize = 0;
    for (0..n) |i| {
        var len: u32 = specs[i].len;
        const rc = sys.syscall5(NR.getsockopt, sys.int(fd), sys.int(specs[i].level), sys.int(specs[i].name), sys.ptr(out + off), sys.ptr(&len));
        lens[i] = if (sys.isErr(rc)) @intCast(sys.signed(rc)) else @intCast(len);
        off += specs[i].len;
    }
}
