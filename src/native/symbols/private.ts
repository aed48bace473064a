// ffi/private.zig
export const privateSymbols = {
  ck_private_root: { parameters: [], result: "i64" },
  ck_mkdirat: { parameters: ["i32", "buffer", "u32"], result: "i64" },
  ck_mknodat: { parameters: ["i32", "buffer", "u32", "u64"], result: "i64" },
  ck_bind_in: { parameters: ["i32", "i32", "buffer", "u32"], result: "i64" },
  ck_pid_hold: { parameters: ["i32"], result: "i64" },
  ck_pid_release: { parameters: ["i32"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
