// ffi/anonfd.zig
export const anonfdSymbols = {
  ck_epoll_create1: { parameters: ["i32"], result: "i64" },
  ck_epoll_targets: {
    parameters: ["i32", "i32", "buffer", "usize", "buffer", "usize", "buffer", "usize"],
    result: "i64",
  },
  ck_kcmp_epoll_tfd: { parameters: ["i32", "i32", "i32", "i32", "i32", "u32"], result: "i64" },
  ck_timerfd_create: { parameters: ["i32", "i32"], result: "i64" },
  ck_timerfd_settime: { parameters: ["i32", "i32", "u64", "u64"], result: "i64" },
  ck_timerfd_gettime: { parameters: ["i32", "i32", "buffer"], result: "i64" },
  ck_timerfd_set_ticks: { parameters: ["i32", "u64"], result: "i64" },
  ck_clock_ns: { parameters: ["i32", "buffer"], result: "i64" },
  ck_signalfd: { parameters: ["u64", "i32"], result: "i64" },
  ck_dead_pidfd: { parameters: [], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
