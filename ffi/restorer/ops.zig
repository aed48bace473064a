//! Runs a task's plan ops (abi.Op) of one phase: shared by the forked task
//! (restore.zig, phase_after_fds) and the restorer blob (later phases). Raw
//! system calls only; the plan is writable (swaps record where they parked
//! an fd in their own record). The two sides import sys.zig as different
//! modules, so it comes in as a parameter.
const abi = @import("abi.zig");

const F_DUPFD_CLOEXEC = 1030;
const F_GETFD = 1;
const FD_CLOEXEC = 1;

pub const Failure = struct { rc: usize, index: u64 };

/// Runs the ops of `phase` in order; returns the first failure, if any.
pub fn run(comptime sys: type, p: *abi.Header, phase: u32) ?Failure {
    return runWith(sys, NoThreads, p, phase);
}

/// `Hooks.thread(p, k)` creates threads[k] (op_thread): only the restorer
/// blob can, so the forked task's side has none.
pub fn runWith(comptime sys: type, comptime Hooks: type, p: *abi.Header, phase: u32) ?Failure {
    const ops: [*]abi.Op = @ptrFromInt(@intFromPtr(p) + p.ops_off);
    const data = @intFromPtr(p) + p.op_data_off;
    var i: usize = 0;
    while (i < p.n_ops) : (i += 1) {
        const o = &ops[i];
        if (o.phase != phase) continue;
        const rc = if (o.op == abi.op_thread) Hooks.thread(p, o.a[0]) else one(sys, o, ops, data, parkMin(p));
        if (sys.isErr(rc) and o.flags & abi.op_flag_may_fail == 0) return .{ .rc = rc, .index = i };
    }
    return null;
}

const NoThreads = struct {
    fn thread(_: *abi.Header, _: u64) usize {
        return @bitCast(@as(isize, -22));
    }
};

/// Whether an op_thread op creates threads[k].
pub fn namesThread(p: *abi.Header, k: u64) bool {
    const ops: [*]abi.Op = @ptrFromInt(@intFromPtr(p) + p.ops_off);
    var i: usize = 0;
    while (i < p.n_ops) : (i += 1) {
        if (ops[i].op == abi.op_thread and ops[i].a[0] == k) return true;
    }
    return false;
}

fn arg(o: *const abi.Op, data: usize, k: u5) u64 {
    return if (o.ptr_mask & (@as(u32, 1) << k) != 0) data + o.a[k] else o.a[k];
}

/// Where a swap parks what it displaces: above every number the plan lays
/// out (the status fd is the highest), and so below the fd limit too.
fn parkMin(p: *const abi.Header) usize {
    const hi = @max(p.service_hi, p.status_fd);
    return @intCast(@max(hi, 2) + 1);
}

/// A swap whose fd is already at its number: nothing to put back.
const swap_noop: u64 = ~@as(u64, 1);

fn one(comptime sys: type, o: *abi.Op, ops: [*]abi.Op, data: usize, park_min: usize) usize {
    const NR = sys.NR;
    switch (o.op) {
        abi.op_syscall => return sys.syscall6(arg(o, data, 0), arg(o, data, 1), arg(o, data, 2), arg(o, data, 3), arg(o, data, 4), arg(o, data, 5), arg(o, data, 6)),
        abi.op_store => {
            if (o.a[1] > 5) return sys.int(@as(isize, -22));
            const at: [*]align(1) u64 = @ptrFromInt(o.a[0]);
            var k: usize = 0;
            while (k < o.a[1]) : (k += 1) at[k] = o.a[2 + k];
            return 0;
        },
        abi.op_reloc => {
            const at: *align(1) u64 = @ptrFromInt(data + o.a[0]);
            at.* = data + o.a[1];
            return 0;
        },
        abi.op_swap_fd => {
            const dst = o.a[0];
            if (o.a[1] == dst) {
                o.a[2] = swap_noop;
                return 0;
            }
            const flags = sys.syscall2(NR.fcntl, dst, F_GETFD);
            if (sys.isErr(flags)) {
                o.a[2] = ~@as(u64, 0); // held nothing
            } else {
                const parked = sys.syscall3(NR.fcntl, dst, F_DUPFD_CLOEXEC, park_min);
                if (sys.isErr(parked)) return parked;
                o.a[2] = parked;
                o.a[3] = flags;
            }
            return sys.syscall3(NR.dup3, o.a[1], dst, sys.O_CLOEXEC);
        },
        abi.op_unswap_fd => {
            const swap = &ops[@intCast(o.a[1])];
            const dst = o.a[0];
            if (swap.a[2] == swap_noop) return 0;
            if (swap.a[2] == ~@as(u64, 0)) return sys.syscall1(NR.close, dst);
            const cloexec: usize = if (swap.a[3] & FD_CLOEXEC != 0) sys.O_CLOEXEC else 0;
            const rc = sys.syscall3(NR.dup3, swap.a[2], dst, cloexec);
            _ = sys.syscall1(NR.close, swap.a[2]);
            return rc;
        },
        else => return sys.int(@as(isize, -22)),
    }
}
