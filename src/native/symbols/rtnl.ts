// ffi/rtnl.zig
export const rtnlSymbols = {
  ck_nl_socket: { parameters: ["u32"], result: "i64" },
  ck_nl_talk: { parameters: ["i32", "buffer", "usize", "buffer", "usize"], result: "i64" },
  ck_read_sysctls: { parameters: ["buffer", "buffer", "usize"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
