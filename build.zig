//! Builds libckpt.so (the one native library ckpt loads with Deno.dlopen), the
//! freestanding restorer blob embedded in it, and the C workloads the tests run.
const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.standardOptimizeOption(.{});

    // The restorer runs after the address space it came from is gone: no libc,
    // no TLS, no stack protector, position independent, entry at offset 0. The
    // linker script refuses to link if any dynamic relocation is left.
    const blob_target = b.resolveTargetQuery(.{ .cpu_arch = .x86_64, .os_tag = .freestanding, .abi = .none });
    const blob_elf = b.addExecutable(.{
        .name = "restorer",
        .root_module = b.createModule(.{
            .root_source_file = b.path("ffi/restorer/blob.zig"),
            .target = blob_target,
            .optimize = .ReleaseSmall,
            .pic = true,
            .stack_protector = false,
            .stack_check = false,
            .red_zone = false,
            .unwind_tables = .none,
            .strip = true,
            .single_threaded = true,
        }),
    });
    blob_elf.root_module.addAnonymousImport("sys", .{ .root_source_file = b.path("ffi/sys.zig") });
    blob_elf.pie = true;
    blob_elf.entry = .{ .symbol_name = "ckpt_restorer_entry" };
    blob_elf.setLinkerScript(b.path("ffi/restorer/blob.ld"));
    const blob_bin = b.addObjCopy(blob_elf.getEmittedBin(), .{ .format = .binary, .basename = "restorer.bin" });
    b.getInstallStep().dependOn(&b.addInstallFile(blob_bin.getOutput(), "lib/restorer.bin").step);

    const lib_mod = b.createModule(.{
        .root_source_file = b.path("ffi/lib.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = false,
        .pic = true,
    });
    lib_mod.addAnonymousImport("restorer_blob", .{ .root_source_file = blob_bin.getOutput() });
    const lib = b.addLibrary(.{ .linkage = .dynamic, .name = "ckpt", .root_module = lib_mod });
    b.installArtifact(lib);

    // Workloads are ordinary dynamically linked glibc programs.
    const workloads = [_][]const u8{ "counter", "reader", "sleeper", "sessionexec", "tree", "threads", "fanout", "sharer", "lazymut", "pipeflags", "inotifier", "fanotifier", "memfd", "epollwl", "anonfdwl", "blockers", "epollbench", "ptimers", "locker", "madv", "swapper", "fdexec", "ticker", "zombies", "sessions", "seccomp", "vforker", "credthreads", "waits", "nsworld", "nslaunch", "clocks", "mntlaunch" };
    for (workloads) |name| {
        const m = b.createModule(.{ .target = target, .optimize = .ReleaseSafe, .link_libc = true });
        m.addCSourceFile(.{ .file = b.path(b.fmt("tests/workloads/{s}.c", .{name})), .flags = &.{ "-O1", "-Wall", "-Werror", "-mavx2" } });
        const exe = b.addExecutable(.{ .name = name, .root_module = m });
        const install = b.addInstallArtifact(exe, .{ .dest_dir = .{ .override = .{ .custom = "workloads" } } });
        b.getInstallStep().dependOn(&install.step);
    }

    // A static (musl) ticker for container rootfses, which hold no libc.
    const musl = b.resolveTargetQuery(.{ .cpu_arch = .x86_64, .os_tag = .linux, .abi = .musl });
    const sm = b.createModule(.{ .target = musl, .optimize = .ReleaseSafe, .link_libc = true });
    sm.addCSourceFile(.{ .file = b.path("tests/workloads/ticker.c"), .flags = &.{ "-O1", "-Wall", "-Werror" } });
    const static_ticker = b.addExecutable(.{ .name = "ticker-static", .root_module = sm, .linkage = .static });
    const install_static = b.addInstallArtifact(static_ticker, .{ .dest_dir = .{ .override = .{ .custom = "workloads" } } });
    b.getInstallStep().dependOn(&install_static.step);
}
