//! Acting with a restored task's authority, on the calling thread only.
//! Linux keeps credentials per thread; glibc's setgroups/setfsuid broadcast
//! to every thread, raw system calls do not. So the JS thread can become the
//! task for a path operation (its fsuid/fsgid decide permission checks, its
//! groups group checks, its effective capabilities the overrides) while every
//! other thread of ckpt stays as it was, and come back afterwards.
//!
//! Order matters. Entering: groups and fsgid first (they need CAP_SETGID,
//! which the switch to a non-zero fsuid may not drop but the lowered
//! capability set would), then fsuid (from 0 to non-zero the kernel drops the
//! filesystem capabilities from the effective set), then the effective set
//! itself is lowered to what the task had, keeping the permitted set so it
//! can be raised again. Leaving runs the same steps backwards.
const sys = @import("sys.zig");

const NR_getgroups = 115;
const NR_setgroups = 116;
pub const NR_setfsuid = 122;
pub const NR_setfsgid = 123;
const NR_capget = 125;
const NR_capset = 126;

const CAP_V3: u32 = 0x20080522;
const NGROUPS_MAX = 65536;
const EPERM: i64 = 1;

const CapHeader = extern struct { version: u32, pid: i32 };
pub const CapData = extern struct { effective: u32, permitted: u32, inheritable: u32 };

/// What ck_cred_enter replaced, so that ck_cred_leave can put it back.
pub const Saved = extern struct {
    fsuid: u32,
    fsgid: u32,
    ngroups: u32,
    _pad: u32,
    caps: [2]CapData,
    groups: [NGROUPS_MAX]u32,
};

export fn ck_cred_saved_size() u64 {
    return @sizeOf(Saved);
}

pub fn capget(out: *[2]CapData) usize {
    var h = CapHeader{ .version = CAP_V3, .pid = 0 };
    return sys.syscall2(NR_capget, sys.ptr(&h), sys.ptr(out));
}

pub fn capset(caps: *const [2]CapData) usize {
    var h = CapHeader{ .version = CAP_V3, .pid = 0 };
    return sys.syscall2(NR_capset, sys.ptr(&h), sys.ptr(caps));
}

/// setfsuid/setfsgid report nothing but the previous value; asking with an
/// invalid id (-1) changes nothing and returns the current one.
pub fn current(nr: usize) u32 {
    return @truncate(sys.syscall1(nr, 0xffffffff));
}

/// Switches the calling thread to fsuid/fsgid, the supplementary groups and
/// at most the effective capabilities `cap_eff`; fills `saved`. On failure
/// nothing is left changed and -errno is returned.
export fn ck_cred_enter(fsuid: u32, fsgid: u32, groups: [*]const u32, ngroups: u32, cap_eff: u64, saved: *Saved) i64 {
    if (ngroups > NGROUPS_MAX) return -22;
    var rc = capget(&saved.caps);
    if (sys.isErr(rc)) return sys.signed(rc);
    rc = sys.syscall2(NR_getgroups, NGROUPS_MAX, sys.ptr(&saved.groups));
    if (sys.isErr(rc)) return sys.signed(rc);
    saved.ngroups = @truncate(rc);
    saved.fsuid = current(NR_setfsuid);
    saved.fsgid = current(NR_setfsgid);

    rc = sys.syscall2(NR_setgroups, ngroups, sys.ptr(groups));
    if (sys.isErr(rc)) return undo(saved, sys.signed(rc));
    _ = sys.syscall1(NR_setfsgid, fsgid);
    if (current(NR_setfsgid) != fsgid) return undo(saved, -EPERM);
    _ = sys.syscall1(NR_setfsuid, fsuid);
    if (current(NR_setfsuid) != fsuid) return undo(saved, -EPERM);

    var now: [2]CapData = undefined;
    rc = capget(&now);
    if (sys.isErr(rc)) return undo(saved, sys.signed(rc));
    const want = [2]u32{ @truncate(cap_eff), @truncate(cap_eff >> 32) };
    for (0..2) |i| now[i].effective = saved.caps[i].effective & want[i];
    rc = capset(&now);
    if (sys.isErr(rc)) return undo(saved, sys.signed(rc));
    return 0;
}

fn undo(saved: *const Saved, err: i64) i64 {
    _ = ck_cred_leave(saved);
    return err;
}

/// Puts back what ck_cred_enter saved; -EPERM when the thread could not be
/// made exactly as it was (the caller must not go on).
export fn ck_cred_leave(saved: *const Saved) i64 {
    // The effective set first: switching ids back needs CAP_SETUID/SETGID.
    _ = capset(&saved.caps);
    _ = sys.syscall1(NR_setfsuid, saved.fsuid);
    _ = sys.syscall1(NR_setfsgid, saved.fsgid);
    const rc = sys.syscall2(NR_setgroups, saved.ngroups, sys.ptr(&saved.groups));
    // fsuid back to 0 raised the filesystem capabilities from the permitted
    // set; set the effective set exactly as it was.
    _ = capset(&saved.caps);
    if (sys.isErr(rc)) return sys.signed(rc);
    if (current(NR_setfsuid) != saved.fsuid or current(NR_setfsgid) != saved.fsgid) return -EPERM;
    var now: [2]CapData = undefined;
    if (sys.isErr(capget(&now))) return -EPERM;
    for (0..2) |i| {
        if (now[i].effective != saved.caps[i].effective) return -EPERM;
    }
    return 0;
}
