// ffi/tty.zig
export const ttySymbols = {
  ck_ioctl_ptr: { parameters: ["i32", "u64", "buffer"], result: "i64" },
  ck_poll_wait: { parameters: ["i32", "u32", "i32"], result: "i64" },
  ck_tty_inject: { parameters: ["i32", "buffer", "usize"], result: "i64" },
  ck_tty_open_ctty: { parameters: ["i32", "buffer", "i32"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
