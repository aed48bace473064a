// ffi/mount.zig
export const mountSymbols = {
  ck_mntns_clone: { parameters: ["i32", "buffer", "u32"], result: "i64" },
  ck_symlinkat: { parameters: ["buffer", "i32", "buffer"], result: "i64" },
  ck_linkat: { parameters: ["i32", "buffer", "i32", "buffer", "i32"], result: "i64" },
  ck_utimensat: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i64" },
  ck_llistxattr: { parameters: ["buffer", "buffer", "usize"], result: "i64" },
  ck_lgetxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "i64" },
  ck_lsetxattr: { parameters: ["buffer", "buffer", "buffer", "usize", "i32"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
