// ffi/unixsk.zig
export const unixskSymbols = {
  ck_socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i64" },
  ck_bind: { parameters: ["i32", "buffer", "u32"], result: "i64" },
  ck_listen: { parameters: ["i32", "i32"], result: "i64" },
  // Blocks until a client connects: run off the JS thread.
  ck_accept: { parameters: ["i32", "i32"], result: "i64", nonblocking: true },
  // The same call, for a connection known to be waiting already.
  ck_accept_ready: { name: "ck_accept", parameters: ["i32", "i32"], result: "i64" },
  ck_unix_as: {
    parameters: ["u32", "i32", "buffer", "u32", "i32", "u32", "u32", "buffer", "buffer"],
    result: "i64",
  },
  ck_connect: { parameters: ["i32", "buffer", "u32"], result: "i64" },
  ck_shutdown: { parameters: ["i32", "i32"], result: "i64" },
  ck_sockname: { parameters: ["i32", "i32", "buffer", "buffer"], result: "i64" },
  ck_unix_send: {
    parameters: ["i32", "buffer", "usize", "buffer", "u32", "buffer", "u32", "i32", "buffer"],
    result: "i64",
  },
  ck_unix_recv: {
    parameters: [
      "i32",
      "buffer",
      "usize",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "i32",
      "buffer",
      "buffer",
    ],
    result: "i64",
  },
  ck_unix_describe: { parameters: ["i32", "i32", "buffer"], result: "i64" },
  ck_unix_make: { parameters: ["buffer", "usize", "buffer"], result: "i64" },
  ck_unix_set: { parameters: ["buffer", "usize", "buffer"], result: "i64" },
  ck_unix_options: {
    parameters: ["i32", "buffer", "buffer", "usize", "buffer"],
    result: "i64",
  },
} as const satisfies Deno.ForeignLibraryInterface;
