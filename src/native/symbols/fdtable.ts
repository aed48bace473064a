// ffi/fdtable.zig
export const fdtableSymbols = {
  ck_read_fds: { parameters: ["i32", "buffer", "usize", "buffer", "usize"], result: "i64" },
  ck_list_fds: { parameters: ["i32", "buffer", "usize"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
