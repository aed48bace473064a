//! CRC32C (Castagnoli) at memory speed, for the pages file: the SSE4.2 crc32
//! instruction over three interleaved streams (its latency is 3 cycles, its
//! throughput one per cycle), joined with a table that shifts a CRC over one
//! stream's length. A table-driven fallback covers CPUs without SSE4.2.
//! Values are the usual finalized CRC32C (init and xorout ~0), so they match
//! src/images/crc32c.ts and can be continued: update(update(0, A), B) ==
//! update(0, A ++ B).
const sys = @import("sys.zig");
const NR = sys.NR;

const poly: u32 = 0x82f63b78; // reflected

/// Bytes per stream in the three-way loop; the three streams cover 12 KiB.
const stream_len: usize = 4096;

fn multModP(a: u32, b0: u32) u32 {
    // Multiplies two polynomials modulo P (reflected bit order, as zlib's
    // crc32_combine does).
    var m: u32 = 1 << 31;
    var p: u32 = 0;
    var b = b0;
    while (m != 0) {
        if (a & m != 0) {
            p ^= b;
            if (a & (m - 1) == 0) break;
        }
        m >>= 1;
        b = if (b & 1 != 0) (b >> 1) ^ poly else b >> 1;
    }
    return p;
}

/// x^(8n) mod P.
fn xPow8n(n: usize) u32 {
    var p: u32 = 1 << 31; // x^0
    var sq: u32 = 1 << 30; // x^1
    var k: usize = n * 8;
    while (k != 0) : (k >>= 1) {
        if (k & 1 != 0) p = multModP(sq, p);
        sq = multModP(sq, sq);
    }
    return p;
}

const Shift = [4][256]u32;

/// shift[k][b] = (b << 8k) * x^(8 * stream_len) mod P: a raw CRC state moved
/// past stream_len zero bytes, four byte lookups at a time.
const shift_table: Shift = blk: {
    @setEvalBranchQuota(10_000_000);
    var t: Shift = undefined;
    const k = xPow8n(stream_len);
    for (0..4) |j| {
        for (0..256) |b| t[j][b] = multModP(k, @as(u32, @intCast(b)) << @intCast(8 * j));
    }
    break :blk t;
};

inline fn shift(c: u32) u32 {
    return shift_table[0][c & 0xff] ^ shift_table[1][(c >> 8) & 0xff] ^
        shift_table[2][(c >> 16) & 0xff] ^ shift_table[3][c >> 24];
}

const byte_table: [256]u32 = blk: {
    @setEvalBranchQuota(100_000);
    var t: [256]u32 = undefined;
    for (0..256) |i| {
        var c: u32 = @intCast(i);
        for (0..8) |_| c = if (c & 1 != 0) (c >> 1) ^ poly else c >> 1;
        t[i] = c;
    }
    break :blk t;
};

inline fn hw64(c: u64, v: u64) u64 {
    return asm ("crc32q %[v], %[ret]"
        : [ret] "=r" (-> u64),
        : [v] "r" (v),
          [c] "0" (c),
    );
}

inline fn hw8(c: u32, v: u8) u32 {
    return asm ("crc32b %[v], %[ret]"
        : [ret] "=r" (-> u32),
        : [v] "r" (v),
          [c] "0" (c),
    );
}

inline fn load64(p: [*]const u8) u64 {
    return @as(*align(1) const u64, @ptrCast(p)).*;
}

var has_hw: i8 = -1;

fn hwAvailable() bool {
    if (has_hw < 0) {
        var ecx: u32 = undefined;
        asm volatile ("cpuid"
            : [ecx] "={ecx}" (ecx),
            : [leaf] "{eax}" (@as(u32, 1)),
              [sub] "{ecx}" (@as(u32, 0)),
            : .{ .ebx = true, .edx = true });
        has_hw = if (ecx & (1 << 20) != 0) 1 else 0; // SSE4.2
    }
    return has_hw == 1;
}

fn rawHw(c0: u32, buf: [*]const u8, len: usize) u32 {
    var c: u64 = c0;
    var p = buf;
    var n = len;
    while (n >= 3 * stream_len) {
        var a: u64 = c;
        var b: u64 = 0;
        var d: u64 = 0;
        var i: usize = 0;
        while (i < stream_len) : (i += 8) {
            a = hw64(a, load64(p + i));
            b = hw64(b, load64(p + stream_len + i));
            d = hw64(d, load64(p + 2 * stream_len + i));
        }
        // state(A ++ B ++ C) = shift(shift(a) ^ b) ^ d, since a raw CRC is
        // linear in its start state.
        c = shift(shift(@intCast(a)) ^ @as(u32, @intCast(b))) ^ @as(u32, @intCast(d));
        p += 3 * stream_len;
        n -= 3 * stream_len;
    }
    while (n >= 8) {
        c = hw64(c, load64(p));
        p += 8;
        n -= 8;
    }
    var c32: u32 = @intCast(c);
    for (p[0..n]) |byte| c32 = hw8(c32, byte);
    return c32;
}

fn rawSw(c0: u32, buf: [*]const u8, len: usize) u32 {
    var c = c0;
    for (buf[0..len]) |byte| c = byte_table[(c ^ byte) & 0xff] ^ (c >> 8);
    return c;
}

/// Continues a finalized CRC32C over buf.
pub fn update(crc: u32, buf: [*]const u8, len: usize) u32 {
    const raw = if (hwAvailable()) rawHw(~crc, buf, len) else rawSw(~crc, buf, len);
    return ~raw;
}

export fn ck_crc32c(crc: u32, buf: [*]const u8, len: usize) u32 {
    return update(crc, buf, len);
}

/// One range of a file to checksum: `len` bytes at `off` (page aligned).
pub const Range = extern struct { off: u64, len: u64 };

const verify_chunk: u64 = 2 << 20;
const MADV_POPULATE_READ = 22;

/// CRC32C of each range of fd, read through a read-only shared mapping (no
/// copy; the pages land in the page cache the restorer reads next). Writes
/// one CRC per range to out. Returns 0 or -errno.
export fn ck_crc32c_ranges(fd: i32, ranges: [*]const Range, n: usize, out: [*]u32) i64 {
    for (ranges[0..n], 0..) |r, i| {
        out[i] = 0;
        if (r.len == 0) continue;
        const m = sys.syscall6(NR.mmap, 0, r.len, sys.PROT_READ, sys.MAP_SHARED, sys.int(fd), r.off);
        if (sys.isErr(m)) return sys.signed(m);
        defer _ = sys.syscall2(NR.munmap, m, r.len);
        const base: [*]const u8 = @ptrFromInt(m);
        var done: u64 = 0;
        var crc: u32 = 0;
        while (done < r.len) {
            const take = @min(verify_chunk, r.len - done);
            // Faulting in ahead in one call is cheaper than a fault per page.
            // EFAULT means the range is past the end of the file (truncated
            // meanwhile): touching it would be SIGBUS, so stop here. Other
            // errors (an old kernel) only cost speed.
            const pr = sys.syscall3(NR.madvise, m + done, take, MADV_POPULATE_READ);
            if (sys.isErr(pr) and sys.signed(pr) == -14) return -14;
            crc = update(crc, base + done, take);
            done += take;
        }
        out[i] = crc;
    }
    return 0;
}
