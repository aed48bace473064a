// ffi/inetsk.zig
export const inetskSymbols = {
  ck_sock_diag: { parameters: ["buffer", "u32", "u32", "buffer", "usize"], result: "i64" },
  ck_recvmsg_raw: {
    parameters: ["i32", "buffer", "usize", "buffer", "buffer", "buffer", "buffer", "i32", "buffer"],
    result: "i64",
  },
  ck_tcp_save: {
    parameters: ["i32", "buffer", "buffer", "usize", "buffer", "usize"],
    result: "i64",
  },
  ck_tcp_restore: {
    parameters: [
      "i32",
      "buffer",
      "buffer",
      "u32",
      "buffer",
      "u32",
      "buffer",
      "usize",
      "buffer",
      "usize",
    ],
    result: "i64",
  },
  ck_getsockopts: { parameters: ["i32", "buffer", "u32", "buffer", "buffer"], result: "void" },
  ck_tcp_repair_fin: { parameters: ["i32", "i32"], result: "i64" },
  ck_send_all: { parameters: ["i32", "buffer", "usize"], result: "i64" },
  ck_raw_send: { parameters: ["i32", "buffer", "usize", "buffer", "u32", "u32"], result: "i64" },
  ck_netlock_watchdog: {
    parameters: [
      "i32",
      "i32",
      "buffer",
      "u32",
      "buffer",
      "u32",
      "buffer",
      "buffer",
      "buffer",
      "u32",
      "buffer",
      "u32",
    ],
    result: "i64",
  },
} as const satisfies Deno.ForeignLibraryInterface;
