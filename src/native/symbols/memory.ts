// ffi/memory.zig
export const memorySymbols = {
  ck_vm_read: { parameters: ["i32", "buffer", "usize", "u64"], result: "i64" },
  // On a worker thread: writing another task's memory needs ptrace rights,
  // not the ptrace thread.
  ck_fill_pages_crc: {
    parameters: ["i32", "i32", "buffer", "usize", "u64", "u64", "buffer"],
    result: "i64",
    nonblocking: true,
  },
  // ffi/lazy.zig. Blocks until every page is copied: on a worker thread,
  // and it does no ptrace.
  ck_lazy_serve: {
    parameters: ["i32", "buffer", "usize", "buffer", "usize", "buffer", "buffer", "usize"],
    result: "i64",
    nonblocking: true,
  },
  // Also returns one CRC32C per run (u32 array).
  ck_dump_pages_crc: {
    parameters: ["i32", "i32", "buffer", "usize", "i32", "u64", "buffer"],
    result: "i64",
    nonblocking: true,
  },
  // ffi/crc32c.zig
  ck_crc32c: { parameters: ["u32", "buffer", "usize"], result: "u32" },
  // Reads through a mapping of the file; off the JS thread so ranges of a
  // large pages file are checked in parallel.
  ck_crc32c_ranges: {
    parameters: ["i32", "buffer", "usize", "buffer"],
    result: "i64",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;
