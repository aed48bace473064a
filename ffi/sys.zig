//! Raw Linux x86_64 system calls, no libc and no allocator. Shared by the
//! library (which runs in forked copies of a multi-threaded runtime, where libc
//! locks may be held) and by the freestanding restorer blob.

pub const NR = struct {
    pub const read = 0;
    pub const write = 1;
    pub const open = 2;
    pub const close = 3;
    pub const poll = 7;
    pub const lseek = 8;
    pub const mmap = 9;
    pub const mprotect = 10;
    pub const munmap = 11;
    pub const brk = 12;
    pub const rt_sigaction = 13;
    pub const rt_sigprocmask = 14;
    pub const rt_sigreturn = 15;
    pub const ioctl = 16;
    pub const pread64 = 17;
    pub const pwrite64 = 18;
    pub const readv = 19;
    pub const writev = 20;
    pub const pipe = 22;
    pub const sched_yield = 24;
    pub const mremap = 25;
    pub const madvise = 28;
    pub const shmget = 29;
    pub const shmat = 30;
    pub const shmctl = 31;
    pub const dup = 32;
    pub const dup2 = 33;
    pub const nanosleep = 35;
    pub const getitimer = 36;
    pub const setitimer = 38;
    pub const getpid = 39;
    pub const socket = 41;
    pub const connect = 42;
    pub const sendto = 44;
    pub const recvfrom = 45;
    pub const sendmsg = 46;
    pub const recvmsg = 47;
    pub const bind = 49;
    pub const getsockname = 51;
    pub const setsockopt = 54;
    pub const getsockopt = 55;
    pub const clone = 56;
    pub const fork = 57;
    pub const exit = 60;
    pub const wait4 = 61;
    pub const kill = 62;
    pub const uname = 63;
    pub const semget = 64;
    pub const semctl = 66;
    pub const shmdt = 67;
    pub const msgget = 68;
    pub const msgsnd = 69;
    pub const msgrcv = 70;
    pub const msgctl = 71;
    pub const fcntl = 72;
    pub const ftruncate = 77;
    pub const getcwd = 79;
    pub const chdir = 80;
    pub const fchdir = 81;
    pub const umask = 95;
    pub const ptrace = 101;
    pub const getuid = 102;
    pub const getgid = 104;
    pub const setuid = 105;
    pub const setgid = 106;
    pub const geteuid = 107;
    pub const getegid = 108;
    pub const setpgid = 109;
    pub const getppid = 110;
    pub const setsid = 112;
    pub const getgroups = 115;
    pub const setgroups = 116;
    pub const setresuid = 117;
    pub const setresgid = 119;
    pub const getpgid = 121;
    pub const setfsuid = 122;
    pub const setfsgid = 123;
    pub const getsid = 124;
    pub const capget = 125;
    pub const capset = 126;
    pub const rt_sigpending = 127;
    pub const rt_sigqueueinfo = 129;
    pub const sigaltstack = 131;
    pub const personality = 135;
    pub const prctl = 157;
    pub const arch_prctl = 158;
    pub const setrlimit = 160;
    pub const chroot = 161;
    pub const sethostname = 170;
    pub const setdomainname = 171;
    pub const gettid = 186;
    pub const tkill = 200;
    pub const futex = 202;
    pub const set_tid_address = 218;
    pub const clock_gettime = 228;
    pub const exit_group = 231;
    pub const tgkill = 234;
    pub const mq_open = 240;
    pub const mq_timedsend = 242;
    pub const mq_timedreceive = 243;
    pub const mq_getsetattr = 245;
    pub const waitid = 247;
    pub const openat = 257;
    pub const unshare = 272;
    pub const set_robust_list = 273;
    pub const get_robust_list = 274;
    pub const tee = 276;
    pub const eventfd2 = 290;
    pub const dup3 = 292;
    pub const pipe2 = 293;
    pub const rt_tgsigqueueinfo = 297;
    pub const prlimit64 = 302;
    pub const setns = 308;
    pub const process_vm_readv = 310;
    pub const process_vm_writev = 311;
    pub const memfd_create = 319;
    pub const userfaultfd = 323;
    pub const rseq = 334;
    pub const pidfd_send_signal = 424;
    pub const fsopen = 430;
    pub const fsconfig = 431;
    pub const fsmount = 432;
    pub const pidfd_open = 434;
    pub const clone3 = 435;
    pub const seccomp = 317;
    pub const close_range = 436;
    pub const pidfd_getfd = 438;
};

pub inline fn syscall0(nr: usize) usize {
    return asm volatile ("syscall"
        : [ret] "={rax}" (-> usize),
        : [nr] "{rax}" (nr),
        : .{ .rcx = true, .r11 = true, .memory = true });
}
pub inline fn syscall1(nr: usize, a: usize) usize {
    return asm volatile ("syscall"
        : [ret] "={rax}" (-> usize),
        : [nr] "{rax}" (nr),
          [a] "{rdi}" (a),
        : .{ .rcx = true, .r11 = true, .memory = true });
}
pub inline fn syscall2(nr: usize, a: usize, b: usize) usize {
    return asm volatile ("syscall"
        : [ret] "={rax}" (-> usize),
        : [nr] "{rax}" (nr),
          [a] "{rdi}" (a),
          [b] "{rsi}" (b),
        : .{ .rcx = true, .r11 = true, .memory = true });
}
pub inline fn syscall3(nr: usize, a: usize, b: usize, c: usize) usize {
    return asm volatile ("syscall"
        : [ret] "={rax}" (-> usize),
        : [nr] "{rax}" (nr),
          [a] "{rdi}" (a),
          [b] "{rsi}" (b),
          [c] "{rdx}" (c),
        : .{ .rcx = true, .r11 = true, .memory = true });
}
pub inline fn syscall4(nr: usize, a: usize, b: usize, c: usize, d: usize) usize {
    return asm volatile ("syscall"
        : [ret] "={rax}" (-> usize),
        : [nr] "{rax}" (nr),
          [a] "{rdi}" (a),
          [b] "{rsi}" (b),
          [c] "{rdx}" (c),
          [d] "{r10}" (d),
        : .{ .rcx = true, .r11 = true, .memory = true });
}
pub inline fn syscall5(nr: usize, a: usize, b: usize, c: usize, d: usize, e: usize) usize {
    return asm volatile ("syscall"
        : [ret] "={rax}" (-> usize),
        : [nr] "{rax}" (nr),
          [a] "{rdi}" (a),
          [b] "{rsi}" (b),
          [c] "{rdx}" (c),
          [d] "{r10}" (d),
          [e] "{r8}" (e),
        : .{ .rcx = true, .r11 = true, .memory = true });
}
pub inline fn syscall6(nr: usize, a: usize, b: usize, c: usize, d: usize, e: usize, f: usize) usize {
    return asm volatile ("syscall"
        : [ret] "={rax}" (-> usize),
        : [nr] "{rax}" (nr),
          [a] "{rdi}" (a),
          [b] "{rsi}" (b),
          [c] "{rdx}" (c),
          [d] "{r10}" (d),
          [e] "{r8}" (e),
          [f] "{r9}" (f),
        : .{ .rcx = true, .r11 = true, .memory = true });
}

/// Kernel convention: values in [-4095, -1] are -errno.
pub inline fn isErr(rc: usize) bool {
    return rc > @as(usize, @bitCast(@as(isize, -4096)));
}

/// Returns rc as a signed value: >= 0 on success, -errno on failure.
pub inline fn signed(rc: usize) i64 {
    return @bitCast(rc);
}

pub inline fn ptr(p: anytype) usize {
    return @intFromPtr(p);
}

pub inline fn int(v: anytype) usize {
    return @bitCast(@as(isize, v));
}

// Constants used across the native code.
pub const PTRACE = struct {
    pub const TRACEME = 0;
    pub const PEEKDATA = 2;
    pub const POKEDATA = 5;
    pub const CONT = 7;
    pub const KILL = 8;
    pub const SINGLESTEP = 9;
    pub const GETREGS = 12;
    pub const SETREGS = 13;
    pub const ATTACH = 16;
    pub const DETACH = 17;
    pub const SETOPTIONS = 0x4200;
    pub const GETEVENTMSG = 0x4201;
    pub const GETSIGINFO = 0x4202;
    pub const GETREGSET = 0x4204;
    pub const SETREGSET = 0x4205;
    pub const SEIZE = 0x4206;
    pub const INTERRUPT = 0x4207;
    pub const LISTEN = 0x4208;
    pub const PEEKSIGINFO = 0x4209;
    pub const GETSIGMASK = 0x420a;
    pub const SETSIGMASK = 0x420b;
    pub const SECCOMP_GET_FILTER = 0x420c;
    pub const SECCOMP_GET_METADATA = 0x420d;
    pub const GET_RSEQ_CONFIGURATION = 0x420f;
    pub const O_TRACESYSGOOD = 1;
    pub const O_EXITKILL = 0x100000;
    pub const O_SUSPEND_SECCOMP = 0x200000;
};
pub const NT_PRSTATUS = 1;
pub const NT_X86_XSTATE = 0x202;

pub const WNOHANG = 1;
pub const WUNTRACED = 2;
pub const WALL = 0x40000000;

pub const SIGKILL = 9;
pub const SIGTRAP = 5;
pub const SIGSTOP = 19;
pub const SIGCHLD = 17;

pub const O_RDONLY = 0;
pub const O_WRONLY = 1;
pub const O_RDWR = 2;
pub const O_CLOEXEC = 0o2000000;
pub const O_DIRECTORY = 0o200000;
pub const O_NONBLOCK = 0o4000;

pub const PROT_READ = 1;
pub const PROT_WRITE = 2;
pub const PROT_EXEC = 4;
pub const MAP_SHARED = 1;
pub const MAP_PRIVATE = 2;
pub const MAP_FIXED = 0x10;
pub const MAP_ANONYMOUS = 0x20;
pub const MAP_GROWSDOWN = 0x100;
pub const MAP_NORESERVE = 0x4000;
pub const MAP_FIXED_NOREPLACE = 0x100000;
pub const MREMAP_MAYMOVE = 1;
pub const MREMAP_FIXED = 2;

/// struct user_regs_struct (x86_64), as PTRACE_GETREGS and NT_PRSTATUS use it.
pub const UserRegs = extern struct {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    rbp: u64,
    rbx: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rax: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    orig_rax: u64,
    rip: u64,
    cs: u64,
    eflags: u64,
    rsp: u64,
    ss: u64,
    fs_base: u64,
    gs_base: u64,
    ds: u64,
    es: u64,
    fs: u64,
    gs: u64,
};

// Sockets and netlink (sock_diag).
pub const AF_UNIX = 1;
pub const AF_NETLINK = 16;
pub const SOCK_RAW = 3;
pub const SOCK_CLOEXEC = 0o2000000;
pub const NETLINK_SOCK_DIAG = 4;
pub const MSG_TRUNC = 0x20;
pub const NLM_F_REQUEST = 0x1;
pub const NLM_F_MULTI = 0x2;
pub const NLM_F_DUMP = 0x300;
pub const NLMSG_ERROR = 2;
pub const NLMSG_DONE = 3;
pub const SOCK_DIAG_BY_FAMILY = 20;

pub const SockaddrNl = extern struct {
    family: u16,
    pad: u16 = 0,
    pid: u32 = 0,
    groups: u32 = 0,
};

pub const NlMsgHdr = extern struct {
    len: u32,
    type: u16,
    flags: u16,
    seq: u32,
    pid: u32,
};

pub const Iovec = extern struct {
    base: usize,
    len: usize,
};

/// struct clone_args (clone3), up to the cgroup field.
pub const CloneArgs = extern struct {
    flags: u64 = 0,
    pidfd: u64 = 0,
    child_tid: u64 = 0,
    parent_tid: u64 = 0,
    exit_signal: u64 = 0,
    stack: u64 = 0,
    stack_size: u64 = 0,
    tls: u64 = 0,
    set_tid: u64 = 0,
    set_tid_size: u64 = 0,
    cgroup: u64 = 0,
};

// userfaultfd (linux/userfaultfd.h), shared by the restorer blob, which
// registers a task's anonymous memory, and ffi/lazy.zig, which serves it.
pub const UFFD_API: u64 = 0xAA;
pub const UFFDIO_API: usize = 0xc018aa3f;
pub const UFFDIO_REGISTER: usize = 0xc020aa00;
pub const UFFDIO_WAKE: usize = 0x8010aa02;
pub const UFFDIO_COPY: usize = 0xc028aa03;
pub const UFFDIO_ZEROPAGE: usize = 0xc020aa04;
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
pub const UFFD_EVENT_FORK: u8 = 0x13;
pub const UFFD_EVENT_REMAP: u8 = 0x14;
pub const UFFD_EVENT_REMOVE: u8 = 0x15;
pub const UFFD_EVENT_UNMAP: u8 = 0x16;
pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
pub const UffdioApi = extern struct { api: u64, features: u64, ioctls: u64 };
pub const UffdioRange = extern struct { start: u64, len: u64 };
pub const UffdioRegister = extern struct { range: UffdioRange, mode: u64, ioctls: u64 };
pub const UffdioCopy = extern struct { dst: u64, src: u64, len: u64, mode: u64, copy: i64 };
pub const UffdioZeropage = extern struct { range: UffdioRange, mode: u64, zeropage: i64 };
/// struct uffd_msg, 32 bytes. Page fault: arg0 flags, arg1 address. Fork:
/// arg0 the child's new userfaultfd (low 32 bits). Remap: arg0 from, arg1 to,
/// arg2 len. Remove and unmap: arg0 start, arg1 end.
pub const UffdMsg = extern struct { event: u8, _r1: u8, _r2: u16, _r3: u32, arg0: u64, arg1: u64, arg2: u64 };
