//! Building short strings (/proc paths, numbers) into a caller's buffer,
//! without an allocator: the library runs in forked copies of a threaded
//! runtime, where allocation is not safe.

/// Copies s to buf[at..]; returns the position after it.
pub fn put(buf: []u8, at: usize, s: []const u8) usize {
    for (s, 0..) |c, k| buf[at + k] = c;
    return at + s.len;
}

/// Writes v in decimal to buf[at..]; returns the position after it.
pub fn putInt(buf: []u8, at: usize, v: u64) usize {
    var tmp: [20]u8 = undefined;
    var n: usize = 0;
    var x = v;
    while (true) {
        tmp[n] = @intCast('0' + x % 10);
        n += 1;
        x /= 10;
        if (x == 0) break;
    }
    var p = at;
    while (n > 0) {
        n -= 1;
        buf[p] = tmp[n];
        p += 1;
    }
    return p;
}
