//! Reading a tracee's memory: one range, or whole page runs streamed into the
//! pages file through a reusable buffer with batched process_vm_readv.
const sys = @import("sys.zig");
const crc32c = @import("crc32c.zig");
const NR = sys.NR;

fn vmRead(pid: i32, local: []const sys.Iovec, remote: []const sys.Iovec) usize {
    return sys.syscall6(NR.process_vm_readv, sys.int(pid), sys.ptr(local.ptr), local.len, sys.ptr(remote.ptr), remote.len, 0);
}

export fn ck_vm_read(pid: i32, buf: [*]u8, len: usize, remote_addr: u64) i64 {
    const l = [1]sys.Iovec{.{ .base = sys.ptr(buf), .len = len }};
    const r = [1]sys.Iovec{.{ .base = remote_addr, .len = len }};
    return sys.signed(vmRead(pid, &l, &r));
}

/// One run of pages to copy: `len` bytes at `addr` in the tracee.
pub const PageRun = extern struct { addr: u64, len: u64 };

const max_iov = 1024;

/// Copies the runs into a pages file from file_off on and writes the CRC32C
/// of each run's bytes to crcs[i]. Each batch goes through a small private
/// buffer: process_vm_readv into it, checksum it while it is in the CPU
/// cache, pwrite it out. That beats reading straight into a shared mapping
/// of the file, where every page must first be faulted in and zeroed (a
/// whole-page write fills a new tmpfs page without clearing it). tmpfs
/// serialises writes to one file on its inode lock, so parallel callers
/// each write their own file. Runs process_vm_readv cannot read (PROT_NONE)
/// are read through mem_fd (/proc/PID/mem, which forces access).
export fn ck_dump_pages_crc(pid: i32, mem_fd: i32, runs: [*]const PageRun, nruns: usize, out_fd: i32, file_off: u64, crcs: [*]u32) i64 {
    const map_rc = sys.syscall6(NR.mmap, 0, buf_len, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_PRIVATE | sys.MAP_ANONYMOUS, @bitCast(@as(i64, -1)), 0);
    if (sys.isErr(map_rc)) return sys.signed(map_rc);
    defer _ = sys.syscall2(NR.munmap, map_rc, buf_len);
    const buf: [*]u8 = @ptrFromInt(map_rc);
    @memset(crcs[0..nruns], 0);
    var out: u64 = file_off;
    var i: usize = 0;
    var off: u64 = 0; // bytes of runs[i] already copied
    while (i < nruns) {
        var local: [max_iov]sys.Iovec = undefined;
        var remote: [max_iov]sys.Iovec = undefined;
        var owner: [max_iov]usize = undefined;
        var n: usize = 0;
        var bytes: u64 = 0;
        while (i < nruns and n < max_iov and bytes < buf_len) {
            const r = runs[i];
            const take = @min(r.len - off, buf_len - bytes);
            local[n] = .{ .base = sys.ptr(buf + bytes), .len = take };
            remote[n] = .{ .base = r.addr + off, .len = take };
            owner[n] = i;
            n += 1;
            bytes += take;
            off += take;
            if (off == r.len) {
                i += 1;
                off = 0;
            }
        }
        const got_rc = vmRead(pid, local[0..n], remote[0..n]);
        const got: u64 = if (sys.isErr(got_rc)) 0 else got_rc;
        if (got < bytes) {
            var done: u64 = 0;
            for (local[0..n], remote[0..n]) |l, r| {
                if (done + l.len <= got) {
                    done += l.len;
                    continue;
                }
                const skip = if (got > done) got - done else 0;
                const prc = preadAll(mem_fd, @ptrFromInt(l.base + skip), l.len - skip, r.base + skip);
                if (prc < 0) return prc;
                done += l.len;
            }
        }
        for (local[0..n], owner[0..n]) |l, o| crcs[o] = crc32c.update(crcs[o], @ptrFromInt(l.base), l.len);
        const wrc = pwriteAll(out_fd, buf, bytes, out);
        if (wrc < 0) return wrc;
        out += bytes;
    }
    return @intCast(out - file_off);
}

/// Small enough to stay in the CPU cache between the copy in, the checksum
/// and the write out.
const buf_len: u64 = 1 << 20;

fn pwriteAll(fd: i32, src: [*]const u8, len: usize, off: u64) i64 {
    var done: usize = 0;
    while (done < len) {
        const rc = sys.syscall4(NR.pwrite64, sys.int(fd), sys.ptr(src + done), len - done, off + done);
        if (sys.isErr(rc)) {
            if (sys.signed(rc) == -4) continue;
            return sys.signed(rc);
        }
        done += rc;
    }
    return 0;
}

fn preadAll(fd: i32, dst: [*]u8, len: usize, off: u64) i64 {
    var done: usize = 0;
    while (done < len) {
        const rc = sys.syscall4(NR.pread64, sys.int(fd), sys.ptr(dst + done), len - done, off + done);
        if (sys.isErr(rc)) {
            if (sys.signed(rc) == -4) continue;
            return sys.signed(rc);
        }
        if (rc == 0) return -5; // EIO: the range vanished
        done += rc;
    }
    return 0;
}

/// A run of the pages file to copy into a task: len bytes at file_off go to addr.
pub const Fill = extern struct { addr: u64, len: u64, file_off: u64 };

const MADV_POPULATE_READ = 22;

/// Copies fills from the pages file into task pid with process_vm_writev,
/// through a read-only shared mapping of the file (page cache, no copy);
/// several calls on other threads fill disjoint parts of one task at once.
/// The CRC32C of each fill's source bytes goes to crcs[i], computed one
/// cache-sized piece at a time right before that piece is copied, so the
/// check costs no extra pass over memory. The caller compares them with the
/// image's before letting the task run. Returns bytes copied.
export fn ck_fill_pages_crc(pid: i32, pages_fd: i32, fills: [*]const Fill, n: usize, map_off: u64, map_len: u64, crcs: [*]u32) i64 {
    if (n == 0) return 0;
    const map_rc = sys.syscall6(NR.mmap, 0, map_len, sys.PROT_READ, sys.MAP_SHARED, sys.int(pages_fd), map_off);
    if (sys.isErr(map_rc)) return sys.signed(map_rc);
    defer _ = sys.syscall2(NR.munmap, map_rc, map_len);
    var total: u64 = 0;
    for (fills[0..n], 0..) |f, i| {
        var crc: u32 = 0;
        var off: u64 = 0;
        while (off < f.len) {
            const piece = @min(piece_len, f.len - off);
            const src = map_rc + (f.file_off - map_off) + off;
            _ = sys.syscall3(NR.madvise, src, piece, MADV_POPULATE_READ);
            crc = crc32c.update(crc, @ptrFromInt(src), piece);
            var done: u64 = 0;
            while (done < piece) {
                const l = sys.Iovec{ .base = src + done, .len = piece - done };
                const r = sys.Iovec{ .base = f.addr + off + done, .len = piece - done };
                const rc = sys.syscall6(NR.process_vm_writev, sys.int(pid), sys.ptr(&l), 1, sys.ptr(&r), 1, 0);
                if (sys.isErr(rc)) return sys.signed(rc);
                if (rc == 0) return -5;
                done += rc;
            }
            off += piece;
        }
        crcs[i] = crc;
        total += f.len;
    }
    return @intCast(total);
}

const piece_len: u64 = 1 << 20;

