//! Lazy restore: serving a restored task's anonymous memory through the
//! userfaultfd its restorer registered. Page faults are answered first, the
//! rest is copied in the background in large chunks between them, so a task
//! that runs already waits at most one chunk's copy for a page it touches.
//! No ptrace: this runs on a worker thread while ckpt finishes the restore.
const sys = @import("sys.zig");
const NR = sys.NR;

/// len bytes at file_off of the pages file belong at addr (sorted by addr).
pub const Fill = extern struct { addr: u64, len: u64, file_off: u64 };

pub const Stats = extern struct {
    faults: u64 = 0,
    fault_bytes: u64 = 0,
    background_bytes: u64 = 0,
    zero_pages: u64 = 0,
    gone: u64 = 0, // the task's memory went away before everything was copied
};

const page: u64 = 4096;
/// Big enough that the ioctl's cost vanishes, small enough that a fault
/// queued behind it waits well under a millisecond.
const chunk: u64 = 2 << 20;
/// After the faulting page itself, this much of its run follows at once:
/// programs touch memory in order far more often than not.
const fault_ahead: u64 = 256 << 10;

const EINTR = 4;
const EAGAIN = 11;
const ENOENT = 2;
const EEXIST = 17;
const ESRCH = 3;

const Gone = error{Gone};
const Failed = error{Failed};

/// Serves uffd until every fill is copied; returns 0 (stats.gone set when the
/// task died first) or -errno of the first copy that failed for another
/// reason (the pages file unreadable, say), which leaves faults unanswered:
/// the caller must kill the task. The uffd is not closed here.
export fn ck_lazy_serve(uffd: i32, pages_fd: i32, fills: [*]const Fill, n: usize, map_len: u64, stats: *Stats) i64 {
    stats.* = .{};
    if (n == 0) return 0;
    const map_rc = sys.syscall6(NR.mmap, 0, map_len, sys.PROT_READ, sys.MAP_SHARED, sys.int(pages_fd), 0);
    if (sys.isErr(map_rc)) return sys.signed(map_rc);
    defer _ = sys.syscall2(NR.munmap, map_rc, map_len);
    var s = Server{ .uffd = uffd, .base = map_rc, .fills = fills[0..n], .stats = stats };
    s.run() catch |e| switch (e) {
        error.Gone => stats.gone = 1,
        error.Failed => return s.err,
    };
    return 0;
}

const Server = struct {
    uffd: i32,
    base: u64,
    fills: []const Fill,
    stats: *Stats,
    err: i64 = 0,

    fn run(s: *Server) (Gone || Failed)!void {
        for (s.fills) |f| {
            var off: u64 = 0;
            while (off < f.len) {
                try s.serveFaults();
                const take = @min(chunk, f.len - off);
                s.stats.background_bytes += try s.copy(f.addr + off, f.file_off + off, take);
                off += take;
            }
        }
    }

    /// Every fault queued now (the fd is non-blocking).
    fn serveFaults(s: *Server) (Gone || Failed)!void {
        var msgs: [64]sys.UffdMsg = undefined;
        while (true) {
            const rc = sys.syscall3(NR.read, sys.int(s.uffd), sys.ptr(&msgs), @sizeOf(@TypeOf(msgs)));
            if (sys.isErr(rc)) {
                const e = -sys.signed(rc);
                if (e == EAGAIN) return;
                if (e == EINTR) continue;
                return s.fail(rc);
            }
            if (rc == 0) return error.Gone;
            const got = rc / @sizeOf(sys.UffdMsg);
            for (msgs[0..got]) |m| {
                if (m.event == sys.UFFD_EVENT_PAGEFAULT) try s.fault(m.arg1 & ~(page - 1));
            }
            if (got < msgs.len) return;
        }
    }

    fn fault(s: *Server, addr: u64) (Gone || Failed)!void {
        s.stats.faults += 1;
        const f = s.find(addr) orelse {
            // Registered but never written before the dump: zeroes.
            var z = sys.UffdioZeropage{ .range = .{ .start = addr, .len = page }, .mode = 0, .zeropage = 0 };
            const rc = sys.syscall3(NR.ioctl, sys.int(s.uffd), sys.UFFDIO_ZEROPAGE, sys.ptr(&z));
            if (!sys.isErr(rc)) {
                s.stats.zero_pages += 1;
                return;
            }
            return s.settle(rc, addr);
        };
        const off = addr - f.addr;
        var c = sys.UffdioCopy{ .dst = addr, .src = s.base + f.file_off + off, .len = page, .mode = 0, .copy = 0 };
        const rc = sys.syscall3(NR.ioctl, sys.int(s.uffd), sys.UFFDIO_COPY, sys.ptr(&c));
        if (sys.isErr(rc)) try s.settle(rc, addr) else s.stats.fault_bytes += page;
        const rest = @min(fault_ahead, f.len - off - page);
        if (rest > 0) s.stats.fault_bytes += try s.copy(addr + page, f.file_off + off + page, rest);
    }

    /// The faulting page could not be placed: already there (the background
    /// copy got it first; the waiter may still sleep, so wake it), or gone.
    fn settle(s: *Server, rc: usize, addr: u64) (Gone || Failed)!void {
        const e = -sys.signed(rc);
        if (e == EEXIST or e == EAGAIN) {
            var r = sys.UffdioRange{ .start = addr, .len = page };
            _ = sys.syscall3(NR.ioctl, sys.int(s.uffd), sys.UFFDIO_WAKE, sys.ptr(&r));
            return;
        }
        if (e == ENOENT) return; // unmapped by the task meanwhile
        return s.fail(rc);
    }

    /// Copies len bytes to dst, skipping pages that are already there (served
    /// on a fault) or no longer mapped; returns the bytes this call placed.
    fn copy(s: *Server, dst: u64, file_off: u64, len: u64) (Gone || Failed)!u64 {
        var done: u64 = 0;
        var placed: u64 = 0;
        while (done < len) {
            var c = sys.UffdioCopy{ .dst = dst + done, .src = s.base + file_off + done, .len = len - done, .mode = 0, .copy = 0 };
            const rc = sys.syscall3(NR.ioctl, sys.int(s.uffd), sys.UFFDIO_COPY, sys.ptr(&c));
            if (!sys.isErr(rc)) {
                placed += len - done;
                break;
            }
            if (c.copy > 0) {
                // Partial: it stopped at a page it could not place; go on
                // from there and find out why.
                done += @intCast(c.copy);
                placed += @intCast(c.copy);
                continue;
            }
            const e = -sys.signed(rc);
            if (e == EEXIST or e == ENOENT) {
                done += page;
                continue;
            }
            if (e == EAGAIN or e == EINTR) continue;
            return s.fail(rc);
        }
        return placed;
    }

    fn find(s: *Server, addr: u64) ?Fill {
        var lo: usize = 0;
        var hi: usize = s.fills.len;
        while (lo < hi) {
            const mid = lo + (hi - lo) / 2;
            if (s.fills[mid].addr <= addr) lo = mid + 1 else hi = mid;
        }
        if (lo == 0) return null;
        const f = s.fills[lo - 1];
        return if (addr < f.addr + f.len) f else null;
    }

    fn fail(s: *Server, rc: usize) (Gone || Failed) {
        if (-sys.signed(rc) == ESRCH) return error.Gone;
        s.err = sys.signed(rc);
        return error.Failed;
    }
};
