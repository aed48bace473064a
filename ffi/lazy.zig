//! Lazy restore: serving a restored task's anonymous memory through the
//! userfaultfd its restorer registered. Page faults are answered first, the
//! rest is copied in the background a piece at a time between them, so a task
//! that runs already waits at most one piece's copy for a page it touches.
//!
//! Each run of the pages file is checked against its CRC32C the first time
//! anything of it is served, before a byte of it is copied: the restore does
//! not read the whole file before the task runs.
//!
//! The task may change its memory meanwhile; the restorer asked for fork,
//! remap, remove and unmap events, and what is still to come follows them:
//! a range the task discarded (MADV_DONTNEED) or unmapped is never filled
//! (a fault there gets zeroes), a remapped one moves, and a child the task
//! forks gets its own userfaultfd, served from a copy of what its parent still
//! lacked at the fork.
//! No ptrace: this runs on a worker thread while ckpt finishes the restore.
const sys = @import("sys.zig");
const crc32c = @import("crc32c.zig");
const NR = sys.NR;

/// len bytes at file_off of a pages file belong at addr (sorted by addr);
/// check is the run's CRC32C | 1 << 32, or 0 when not checked here, with
/// bits 48..63 the pages file: an index into the server's pages_fds (0 is
/// the task's own, more come from parent images).
pub const Fill = extern struct { addr: u64, len: u64, file_off: u64, check: u64 };

fn sourceOf(f: Fill) usize {
    return @intCast(f.check >> 48);
}

pub const Stats = extern struct {
    faults: u64 = 0,
    fault_bytes: u64 = 0,
    background_bytes: u64 = 0,
    zero_pages: u64 = 0,
    gone: u64 = 0, // the task's memory went away before everything was copied
    forks: u64 = 0, // children forked meanwhile, each served as well
    remaps: u64 = 0,
    dropped_bytes: u64 = 0, // never copied: discarded or unmapped by the program first
    bad_fill: u64 = 0, // with -EBADMSG: the fill whose bytes do not match its CRC32C
    n_open: u64 = 0, // on failure: userfaultfds left open, listed in open_fds
    /// -errno of the failure, stored last: the caller may read everything
    /// above as soon as it sees this, before the call returns.
    failed: u64 = 0,
};

const page: u64 = 4096;
/// The read buffer, and the most one background copy takes: big enough that
/// the ioctl's cost vanishes, small enough that a fault queued behind it
/// waits well under a millisecond.
const buf_size: u64 = 2 << 20;
/// After the faulting page itself, this much of its run follows at once:
/// programs touch memory in order far more often than not.
const fault_ahead: u64 = 256 << 10;
/// Messages taken from one userfaultfd before the others get their turn.
const max_batch: usize = 1024;

const ENOENT = 2;
const ESRCH = 3;
const EINTR = 4;
const EFAULT = 14;
const EAGAIN = 11;
const ENOMEM = 12;
const EEXIST = 17;
const EBADMSG = 74;
const EINVAL_ = 22;

const Gone = error{Gone};
const Failed = error{Failed};

/// Serves uffd (and the userfaultfds of children the task forks) until every
/// fill is in or the memory is gone. Owns uffd: returns 0 with every
/// userfaultfd closed (stats.gone set when the task died first), or -errno of
/// the first failure with the ones still open in open_fds[0..stats.n_open].
/// Those must stay open until the tree is killed: closing one would hand its
/// waiting threads zero pages instead of theirs. -EBADMSG: fill
/// stats.bad_fill does not match its CRC32C; -EFAULT: the pages file can no
/// longer be read there. The failure is also in stats.failed before this
/// returns, for a caller that cannot wait for the return (the restore is
/// blocked on a task that waits for a page).
export fn ck_lazy_serve(uffd: i32, pages_fds: [*]const i32, n_pages_fds: usize, fills: [*]const Fill, n: usize, stats: *Stats, open_fds: [*]i32, max_open: usize) i64 {
    stats.* = .{};
    for (fills[0..n]) |f| if (sourceOf(f) >= n_pages_fds) return -EINVAL_;
    var s = Server{ .pages_fds = pages_fds[0..n_pages_fds], .fills = fills[0..n], .stats = stats };
    defer s.free();
    const rc = s.start(uffd);
    if (rc == 0) return 0;
    if (s.clients.len == 0 and max_open > 0) {
        open_fds[0] = uffd;
        stats.n_open = 1;
    }
    for (s.clients.items()) |c| {
        if (stats.n_open == max_open) break;
        open_fds[stats.n_open] = c.uffd;
        stats.n_open += 1;
    }
    @atomicStore(u64, &stats.failed, @bitCast(-rc), .release);
    return rc;
}

/// A growable array in its own anonymous mapping (no allocator here).
fn Vec(comptime T: type) type {
    return struct {
        ptr: [*]T = undefined,
        len: usize = 0,
        cap: usize = 0,
        const Self = @This();

        fn bytes(n: usize) usize {
            return (n * @sizeOf(T) + page - 1) & ~(page - 1);
        }

        fn reserve(v: *Self, want: usize) bool {
            if (want <= v.cap) return true;
            var cap: usize = if (v.cap == 0) page / @sizeOf(T) else v.cap * 2;
            while (cap < want) cap *= 2;
            const rc = if (v.cap == 0)
                sys.syscall6(NR.mmap, 0, bytes(cap), sys.PROT_READ | sys.PROT_WRITE, sys.MAP_PRIVATE | sys.MAP_ANONYMOUS, ~@as(usize, 0), 0)
            else
                sys.syscall5(NR.mremap, @intFromPtr(v.ptr), bytes(v.cap), bytes(cap), sys.MREMAP_MAYMOVE, 0);
            if (sys.isErr(rc)) return false;
            v.ptr = @ptrFromInt(rc);
            v.cap = bytes(cap) / @sizeOf(T);
            return true;
        }

        fn free(v: *Self) void {
            if (v.cap != 0) _ = sys.syscall2(NR.munmap, @intFromPtr(v.ptr), bytes(v.cap));
            v.* = .{};
        }

        fn items(v: *const Self) []T {
            return v.ptr[0..v.len];
        }

        /// n uninitialized places at i, the rest moved up.
        fn gap(v: *Self, i: usize, n: usize) bool {
            if (!v.reserve(v.len + n)) return false;
            var j = v.len;
            while (j > i) : (j -= 1) v.ptr[j - 1 + n] = v.ptr[j - 1];
            v.len += n;
            return true;
        }

        fn remove(v: *Self, i: usize, n: usize) void {
            var j = i;
            while (j + n < v.len) : (j += 1) v.ptr[j] = v.ptr[j + n];
            v.len -= n;
        }
    };
}

/// What is still to come at addr: len bytes from file_off, part of fill.
const Seg = extern struct { addr: u64, len: u64, file_off: u64, fill: u64 };

/// One address space being served: the task's, or a child's forked from it.
const Client = struct {
    uffd: i32,
    root: bool,
    gone: bool = false,
    /// Sorted by addr, never overlapping.
    segs: Vec(Seg) = .{},
};

const Server = struct {
    pages_fds: []const i32,
    fills: []const Fill,
    stats: *Stats,
    err: i64 = 0,
    /// One byte per fill: its bytes matched its CRC32C.
    checked: Vec(u8) = .{},
    clients: Vec(Client) = .{},
    msgs: Vec(sys.UffdMsg) = .{},
    moving: Vec(Seg) = .{},
    /// Bytes [buf_off, buf_off + buf_len) of pages file buf_src as last read.
    buf: [*]u8 = undefined,
    buf_src: usize = 0,
    buf_off: u64 = 0,
    buf_len: u64 = 0,
    has_buf: bool = false,
    next: usize = 0, // the client whose turn it is for a background copy
    /// Counts what changed anything: a page placed or skipped, an event.
    steps: u64 = 0,

    fn start(s: *Server, uffd: i32) i64 {
        if (!s.clients.reserve(1)) return -ENOMEM;
        s.clients.ptr[0] = .{ .uffd = uffd, .root = true };
        s.clients.len = 1;
        const m = sys.syscall6(NR.mmap, 0, buf_size, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_PRIVATE | sys.MAP_ANONYMOUS, ~@as(usize, 0), 0);
        if (sys.isErr(m)) return sys.signed(m);
        s.buf = @ptrFromInt(m);
        s.has_buf = true;
        if (!s.checked.reserve(s.fills.len)) return -ENOMEM;
        @memset(s.checked.ptr[0..s.fills.len], 0);
        s.checked.len = s.fills.len;
        const segs = &s.clients.ptr[0].segs;
        if (!segs.reserve(s.fills.len)) return -ENOMEM;
        for (s.fills, 0..) |f, i| segs.ptr[i] = .{ .addr = f.addr, .len = f.len, .file_off = f.file_off, .fill = i };
        segs.len = s.fills.len;
        s.run() catch return s.err;
        return 0;
    }

    fn free(s: *Server) void {
        for (s.clients.items()) |*c| c.segs.free();
        s.clients.free();
        s.checked.free();
        s.msgs.free();
        s.moving.free();
        if (s.has_buf) _ = sys.syscall2(NR.munmap, @intFromPtr(s.buf), buf_size);
    }

    fn run(s: *Server) Failed!void {
        var idle: u32 = 0;
        while (s.clients.len > 0) {
            const before = s.steps;
            var i: usize = 0;
            // By index: a fork event adds a client (and may move the array).
            while (i < s.clients.len) : (i += 1) try s.drain(i);
            try s.background();
            s.retire();
            if (s.steps != before) {
                idle = 0;
                continue;
            }
            // Every copy was refused with EAGAIN: an event's thread has yet
            // to leave the kernel. Give it the CPU.
            idle += 1;
            if (idle < 16) {
                _ = sys.syscall0(NR.sched_yield);
            } else {
                const ts = [2]i64{ 0, 100_000 };
                _ = sys.syscall2(NR.nanosleep, sys.ptr(&ts), 0);
            }
        }
    }

    /// Closes the userfaultfds with nothing left to serve: threads still
    /// waiting there (for a page never written) then get the kernel's zeroes.
    fn retire(s: *Server) void {
        var i = s.clients.len;
        while (i > 0) {
            i -= 1;
            const c = &s.clients.ptr[i];
            if (!c.gone and c.segs.len > 0) continue;
            if (c.gone and c.root) s.stats.gone = 1;
            _ = sys.syscall1(NR.close, sys.int(c.uffd));
            c.segs.free();
            s.clients.remove(i, 1);
        }
    }

    /// Everything queued on client ci now (its fd is non-blocking): events
    /// first, then faults. Faults are read before events, yet one may come
    /// from after an event (a fault at a remapped range's new place), so it
    /// is served only once the bookkeeping has followed every event read.
    /// An event not yet read holds the copies back (EAGAIN), so nothing is
    /// placed where the program changed its mind.
    fn drain(s: *Server, ci: usize) Failed!void {
        if (s.clients.ptr[ci].gone) return;
        const fd = s.clients.ptr[ci].uffd;
        s.msgs.len = 0;
        while (s.msgs.len < max_batch) {
            if (!s.msgs.reserve(s.msgs.len + 64)) return s.fail(-ENOMEM);
            const want = 64 * @sizeOf(sys.UffdMsg);
            const rc = sys.syscall3(NR.read, sys.int(fd), @intFromPtr(s.msgs.ptr + s.msgs.len), want);
            if (sys.isErr(rc)) {
                const e = -sys.signed(rc);
                if (e == EAGAIN) break;
                if (e == EINTR) continue;
                return s.fail(sys.signed(rc));
            }
            s.msgs.len += rc / @sizeOf(sys.UffdMsg);
            if (rc < want) break;
        }
        for (s.msgs.items()) |m| {
            if (m.event != sys.UFFD_EVENT_PAGEFAULT) s.steps += 1;
            switch (m.event) {
                sys.UFFD_EVENT_FORK => try s.forked(ci, @bitCast(@as(u32, @truncate(m.arg0)))),
                sys.UFFD_EVENT_REMAP => try s.remap(ci, m.arg0, m.arg1, m.arg2),
                sys.UFFD_EVENT_REMOVE, sys.UFFD_EVENT_UNMAP => {
                    s.stats.dropped_bytes += try s.cut(ci, m.arg0, m.arg1);
                },
                else => {},
            }
        }
        for (s.msgs.items()) |m| {
            if (m.event != sys.UFFD_EVENT_PAGEFAULT) continue;
            s.fault(ci, m.arg1 & ~(page - 1)) catch |e| switch (e) {
                error.Gone => {
                    s.clients.ptr[ci].gone = true;
                    s.steps += 1;
                    break;
                },
                error.Failed => return error.Failed,
            };
        }
    }

    /// A fork of client ci's task: the child's userfaultfd, to be served
    /// from what the parent still lacked. The parent's copies were held
    /// back (EAGAIN) from the fork until this event was read, so its
    /// bookkeeping is the child's memory as of the fork.
    fn forked(s: *Server, ci: usize, fd: i32) Failed!void {
        s.stats.forks += 1;
        if (!s.clients.reserve(s.clients.len + 1)) return s.fail(-ENOMEM);
        var child = Client{ .uffd = fd, .root = false };
        const from = &s.clients.ptr[ci].segs;
        if (!child.segs.reserve(from.len)) return s.fail(-ENOMEM);
        @memcpy(child.segs.ptr[0..from.len], from.items());
        child.segs.len = from.len;
        s.clients.ptr[s.clients.len] = child;
        s.clients.len += 1;
    }

    /// mremap moved [from, from + len) to [to, to + len): what was still to
    /// come there follows.
    fn remap(s: *Server, ci: usize, from: u64, to: u64, len: u64) Failed!void {
        s.stats.remaps += 1;
        const segs = &s.clients.ptr[ci].segs;
        if (!split(segs, from) or !split(segs, from +% len)) return s.fail(-ENOMEM);
        const a = lowerBound(segs, from);
        const b = lowerBound(segs, from +% len);
        s.moving.len = 0;
        if (!s.moving.reserve(b - a)) return s.fail(-ENOMEM);
        @memcpy(s.moving.ptr[0 .. b - a], segs.ptr[a..b]);
        s.moving.len = b - a;
        segs.remove(a, b - a);
        // Whatever was at the destination was unmapped first.
        _ = try s.cut(ci, to, to +% len);
        for (s.moving.items()) |*g| g.addr = g.addr - from + to;
        const at = lowerBound(segs, to);
        if (!segs.gap(at, s.moving.len)) return s.fail(-ENOMEM);
        @memcpy(segs.ptr[at .. at + s.moving.len], s.moving.items());
    }

    /// Forgets [lo, hi) of client ci; returns the bytes that were still to come.
    fn cut(s: *Server, ci: usize, lo: u64, hi: u64) Failed!u64 {
        const segs = &s.clients.ptr[ci].segs;
        if (hi <= lo) return 0;
        if (!split(segs, lo) or !split(segs, hi)) return s.fail(-ENOMEM);
        const a = lowerBound(segs, lo);
        const b = lowerBound(segs, hi);
        var n: u64 = 0;
        for (segs.ptr[a..b]) |g| n += g.len;
        segs.remove(a, b - a);
        return n;
    }

    fn fault(s: *Server, ci: usize, addr: u64) (Gone || Failed)!void {
        s.stats.faults += 1;
        const segs = &s.clients.ptr[ci].segs;
        const k = find(segs, addr) orelse {
            // Never written before the dump, or discarded since: zeroes.
            var z = sys.UffdioZeropage{ .range = .{ .start = addr, .len = page }, .mode = 0, .zeropage = 0 };
            const rc = sys.syscall3(NR.ioctl, sys.int(s.clients.ptr[ci].uffd), sys.UFFDIO_ZEROPAGE, sys.ptr(&z));
            if (!sys.isErr(rc)) {
                s.stats.zero_pages += 1;
                s.steps += 1;
                return;
            }
            return s.settle(ci, rc, addr);
        };
        const g = segs.ptr[k];
        const got = try s.place(ci, addr, @min(page + fault_ahead, g.addr + g.len - addr));
        s.stats.fault_bytes += got.placed;
        if (!got.first) wake(s.clients.ptr[ci].uffd, addr);
    }

    /// The faulting page could not be placed: already there (the background
    /// copy got it first), unmapped meanwhile, or an event to read first.
    /// The waiting thread is woken either way and faults again if need be.
    fn settle(s: *Server, ci: usize, rc: usize, addr: u64) (Gone || Failed)!void {
        const e = -sys.signed(rc);
        if (e != EAGAIN) s.steps += 1;
        if (e == EEXIST or e == EAGAIN or e == ENOENT) return wake(s.clients.ptr[ci].uffd, addr);
        if (e == ESRCH) return error.Gone;
        return s.fail(sys.signed(rc));
    }

    /// One background copy: the first piece of some client's first segment,
    /// the clients taking turns.
    fn background(s: *Server) Failed!void {
        const n = s.clients.len;
        var t: usize = 0;
        while (t < n) : (t += 1) {
            const ci = (s.next + t) % n;
            const c = &s.clients.ptr[ci];
            if (c.gone or c.segs.len == 0) continue;
            s.next = ci + 1;
            const g = c.segs.ptr[0];
            const got = s.place(ci, g.addr, @min(g.len, buf_size)) catch |e| switch (e) {
                error.Gone => {
                    s.clients.ptr[ci].gone = true;
                    s.steps += 1;
                    return;
                },
                error.Failed => return error.Failed,
            };
            s.stats.background_bytes += got.placed;
            return;
        }
    }

    const Placed = struct { done: u64, placed: u64, first: bool };

    /// Copies [addr, addr + len) of client ci, which lies in one segment,
    /// from the pages file once its fill is checked. Pages already there
    /// (served on a fault) or unmapped are skipped; an event to read first
    /// (EAGAIN) stops it. What it got through is no longer to come.
    fn place(s: *Server, ci: usize, addr: u64, len: u64) (Gone || Failed)!Placed {
        const segs = &s.clients.ptr[ci].segs;
        const g = segs.ptr[find(segs, addr).?];
        const file_off = g.file_off + (addr - g.addr);
        try s.check(g.fill);
        const src = try s.load(sourceOf(s.fills[g.fill]), file_off, len);
        const uffd = s.clients.ptr[ci].uffd;
        var r = Placed{ .done = 0, .placed = 0, .first = false };
        while (r.done < len) {
            var c = sys.UffdioCopy{ .dst = addr + r.done, .src = @intFromPtr(src + r.done), .len = len - r.done, .mode = 0, .copy = 0 };
            const rc = sys.syscall3(NR.ioctl, sys.int(uffd), sys.UFFDIO_COPY, sys.ptr(&c));
            if (c.copy > 0) {
                if (r.done == 0) r.first = true;
                r.done += @intCast(c.copy);
                r.placed += @intCast(c.copy);
            }
            if (!sys.isErr(rc)) break;
            // Partial (reported as EAGAIN): go on from where it stopped
            // and find out why.
            if (c.copy > 0) continue;
            const e = -sys.signed(rc);
            if (e == EEXIST or e == ENOENT) {
                r.done += page; // already there, or unmapped meanwhile
                continue;
            }
            if (e == EINTR) continue;
            if (e == EAGAIN) break;
            if (e == ESRCH) return error.Gone;
            return s.fail(sys.signed(rc));
        }
        if (r.done > 0) s.steps += 1;
        _ = try s.cut(ci, addr, addr + r.done);
        return r;
    }

    /// Reads fill f whole and compares it with its CRC32C, once.
    fn check(s: *Server, f: u64) Failed!void {
        if (s.checked.ptr[f] != 0) return;
        const fill = s.fills[f];
        if ((fill.check >> 32) & 1 != 0) {
            var crc: u32 = 0;
            var off: u64 = 0;
            while (off < fill.len) {
                const take = @min(buf_size, fill.len - off);
                try s.read(sourceOf(fill), fill.file_off + off, take);
                crc = crc32c.update(crc, s.buf, take);
                off += take;
            }
            if (crc != @as(u32, @truncate(fill.check))) {
                s.stats.bad_fill = f;
                return s.fail(-EBADMSG);
            }
        }
        s.checked.ptr[f] = 1;
    }

    /// The file's bytes [off, off + len), len <= buf_size, in the buffer.
    fn load(s: *Server, src: usize, off: u64, len: u64) Failed![*]const u8 {
        if (src != s.buf_src or off < s.buf_off or off + len > s.buf_off + s.buf_len) try s.read(src, off, len);
        return s.buf + (off - s.buf_off);
    }

    fn read(s: *Server, src: usize, off: u64, len: u64) Failed!void {
        s.buf_len = 0;
        var done: u64 = 0;
        while (done < len) {
            const rc = sys.syscall4(NR.pread64, sys.int(s.pages_fds[src]), @intFromPtr(s.buf + done), len - done, off + done);
            if (sys.signed(rc) == -EINTR) continue;
            // Shorter than at the check before restore, or unreadable.
            if (sys.isErr(rc) or rc == 0) return s.fail(-EFAULT);
            done += rc;
        }
        s.buf_src = src;
        s.buf_off = off;
        s.buf_len = len;
    }

    fn fail(s: *Server, rc: i64) Failed {
        s.err = rc;
        return error.Failed;
    }
};

fn wake(uffd: i32, addr: u64) void {
    var r = sys.UffdioRange{ .start = addr, .len = page };
    _ = sys.syscall3(NR.ioctl, sys.int(uffd), sys.UFFDIO_WAKE, sys.ptr(&r));
}

/// The first segment at or above addr.
fn lowerBound(segs: *const Vec(Seg), addr: u64) usize {
    var lo: usize = 0;
    var hi: usize = segs.len;
    while (lo < hi) {
        const mid = lo + (hi - lo) / 2;
        if (segs.ptr[mid].addr < addr) lo = mid + 1 else hi = mid;
    }
    return lo;
}

fn find(segs: *const Vec(Seg), addr: u64) ?usize {
    const i = lowerBound(segs, addr + 1);
    if (i == 0) return null;
    const g = segs.ptr[i - 1];
    return if (addr < g.addr + g.len) i - 1 else null;
}

/// Makes addr a segment boundary; false when out of memory.
fn split(segs: *Vec(Seg), addr: u64) bool {
    const k = find(segs, addr) orelse return true;
    const g = segs.ptr[k];
    if (g.addr == addr) return true;
    if (!segs.gap(k + 1, 1)) return false;
    const head = addr - g.addr;
    segs.ptr[k].len = head;
    segs.ptr[k + 1] = .{ .addr = addr, .len = g.len - head, .file_off = g.file_off + head, .fill = g.fill };
    return true;
}
