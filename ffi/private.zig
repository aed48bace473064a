//! A private place for objects whose path is gone (src/files/private_place.ts):
//! a tmpfs mounted nowhere, the directories made in it by fd, a socket bound
//! there by a helper whose root is that tmpfs (bind(2) takes a string, looked
//! up from the caller's root), and pids held for a moment so that a message
//! can carry a sender's pid as its credentials (src/unix/sender_pids.ts).
const sys = @import("sys.zig");
const NR = sys.NR;

const NR_mkdirat = 258;
const NR_mknodat = 259;
const NR_fsopen = 430;
const NR_fsconfig = 431;
const NR_fsmount = 432;
const FSOPEN_CLOEXEC = 1;
const FSMOUNT_CLOEXEC = 1;
const FSCONFIG_SET_STRING = 1;
const FSCONFIG_CMD_CREATE = 6;
const MOUNT_ATTR_NOSUID = 0x2;
const MOUNT_ATTR_NODEV = 0x4;
const MOUNT_ATTR_NOEXEC = 0x8;
const ECHILD = 10;
const CLONE_VM = 0x100;
const CLONE_FILES = 0x400;
const CLONE_VFORK = 0x4000;
const EIO = 5;

fn ret(rc: usize) i64 {
    return sys.signed(rc);
}

/// A new tmpfs, mounted nowhere (fsopen + fsmount give a detached mount: no
/// path of any mount namespace reaches it); returns an fd of its root.
export fn ck_private_root() i64 {
    const fs = sys.syscall2(NR_fsopen, sys.ptr("tmpfs"), FSOPEN_CLOEXEC);
    if (sys.isErr(fs)) return ret(fs);
    defer _ = sys.syscall1(NR.close, fs);
    var rc = sys.syscall5(NR_fsconfig, fs, FSCONFIG_SET_STRING, sys.ptr("mode"), sys.ptr("0700"), 0);
    if (!sys.isErr(rc)) rc = sys.syscall5(NR_fsconfig, fs, FSCONFIG_CMD_CREATE, 0, 0, 0);
    if (sys.isErr(rc)) return ret(rc);
    return ret(sys.syscall3(NR_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC));
}

export fn ck_mkdirat(dirfd: i32, name: [*:0]const u8, mode: u32) i64 {
    return ret(sys.syscall3(NR_mkdirat, sys.int(dirfd), sys.ptr(name), mode));
}

export fn ck_mknodat(dirfd: i32, name: [*:0]const u8, mode: u32, dev: u64) i64 {
    return ret(sys.syscall4(NR_mknodat, sys.int(dirfd), sys.ptr(name), mode, dev));
}

/// Binds socket fd to addr as seen from root_fd: a child sharing ckpt's
/// memory and fd table while ckpt's thread waits (clone3 CLONE_VM |
/// CLONE_VFORK | CLONE_FILES: about as cheap as a thread, nothing copied)
/// but with its own root and cwd takes root_fd as both and binds; the name
/// is the string given, the file is made below root_fd. Returns 0 or -errno
/// (of the step that failed).
export fn ck_bind_in(root_fd: i32, fd: i32, addr: [*]const u8, len: u32) i64 {
    var args = sys.CloneArgs{ .flags = CLONE_VM | CLONE_VFORK | CLONE_FILES, .exit_signal = 0 };
    const dot: [*:0]const u8 = ".";
    // The child runs on ckpt's stack while ckpt waits, so it must not touch
    // it: everything it needs is in registers the kernel keeps across
    // syscalls, and it only makes system calls until it exits — the first
    // blocks every signal, so that no handler of ckpt's runs in it.
    const all: u64 = ~@as(u64, 0);
    const pid = asm volatile (
        \\ syscall
        \\ test %%rax, %%rax
        \\ jnz 2f
        \\ mov $14, %%eax
        \\ xor %%edi, %%edi
        \\ mov %%r9, %%rsi
        \\ xor %%edx, %%edx
        \\ mov $8, %%r10d
        \\ syscall
        \\ mov $81, %%eax
        \\ mov %%r12, %%rdi
        \\ syscall
        \\ test %%rax, %%rax
        \\ js 1f
        \\ mov $161, %%eax
        \\ mov %%r13, %%rdi
        \\ syscall
        \\ test %%rax, %%rax
        \\ js 1f
        \\ mov $49, %%eax
        \\ mov %%r14, %%rdi
        \\ mov %%r15, %%rsi
        \\ mov %%r8, %%rdx
        \\ syscall
        \\ 1:
        \\ neg %%rax
        \\ mov %%rax, %%rdi
        \\ mov $231, %%eax
        \\ syscall
        \\ 2:
        : [ret] "={rax}" (-> usize),
        : [nr] "{rax}" (@as(usize, NR.clone3)),
          [a] "{rdi}" (sys.ptr(&args)),
          [b] "{rsi}" (@as(usize, @sizeOf(sys.CloneArgs))),
          [root] "{r12}" (sys.int(root_fd)),
          [dot] "{r13}" (sys.ptr(dot)),
          [fd] "{r14}" (sys.int(fd)),
          [addr] "{r15}" (sys.ptr(addr)),
          [len] "{r8}" (@as(usize, len)),
          [mask] "{r9}" (sys.ptr(&all)),
        : .{ .rcx = true, .r11 = true, .rdx = true, .r10 = true, .memory = true });
    if (sys.isErr(pid)) return ret(pid);
    return reap(pid);
}

fn reap(pid: usize) i64 {
    var status: u32 = 0;
    while (true) {
        const w = sys.syscall4(NR.wait4, pid, sys.ptr(&status), sys.WALL, 0);
        if (sys.signed(w) == -4) continue; // EINTR
        if (sys.isErr(w)) return ret(w);
        if (w != pid) return -ECHILD;
        break;
    }
    if (status & 0x7f != 0) return -EIO;
    return -@as(i64, (status >> 8) & 0xff);
}

/// Makes pid exist for a moment: a child made with exactly that pid
/// (clone3 set_tid; CLONE_VM | CLONE_VFORK, so nothing is copied and ckpt
/// waits until it is gone) exits at once and stays a zombie, unreaped, until
/// ck_pid_release; while it is, the pid can be named in SCM_CREDENTIALS.
/// Returns the pid, -EEXIST when it is taken, or another -errno.
export fn ck_pid_hold(pid: i32) i64 {
    var want: i32 = pid;
    var args = sys.CloneArgs{
        .flags = CLONE_VM | CLONE_VFORK,
        .exit_signal = 0,
        .set_tid = sys.ptr(&want),
        .set_tid_size = 1,
    };
    // The child, on ckpt's stack, only exits.
    const rc = asm volatile (
        \\ syscall
        \\ test %%rax, %%rax
        \\ jnz 1f
        \\ mov $231, %%eax
        \\ xor %%edi, %%edi
        \\ syscall
        \\ 1:
        : [ret] "={rax}" (-> usize),
        : [nr] "{rax}" (@as(usize, NR.clone3)),
          [a] "{rdi}" (sys.ptr(&args)),
          [b] "{rsi}" (@as(usize, @sizeOf(sys.CloneArgs))),
        : .{ .rcx = true, .r11 = true, .memory = true });
    if (sys.isErr(rc)) return ret(rc);
    return @intCast(rc);
}

/// Reaps a child of ck_pid_hold (its pid is free again afterwards).
export fn ck_pid_release(pid: i32) i64 {
    const rc = reap(@intCast(pid));
    return if (rc < 0) rc else pid;
}
