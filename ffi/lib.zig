//! libckpt.so: every symbol ckpt loads with Deno.dlopen. Each file below owns
//! one area and exports C-ABI functions that return -errno on failure.
comptime {
    _ = @import("ptrace.zig");
    _ = @import("fdops.zig");
    _ = @import("memory.zig");
    _ = @import("lazy.zig");
    _ = @import("crc32c.zig");
    _ = @import("restore.zig");
    _ = @import("probe.zig");
    _ = @import("sockdiag.zig");
    _ = @import("unixsk.zig");
    _ = @import("anonfd.zig");
    _ = @import("fdtable.zig");
    _ = @import("tracking.zig");
    _ = @import("notify.zig");
    _ = @import("tty.zig");
    _ = @import("creds.zig");
    _ = @import("ns.zig");
    _ = @import("rtnl.zig");
    _ = @import("mount.zig");
    _ = @import("inetsk.zig");
    _ = @import("private.zig");
}

/// ABI version checked by src/native/ so a stale library is never used.
export fn ck_abi_version() u32 {
    return 11;
}
