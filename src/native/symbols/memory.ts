// ffi/memory.zig
export const memorySymbols = {
  ck_vm_read: { parameters: ["i32", "buffer", "usize", "u64"], result: "i64" },
  ck_dump_pages: { parameters: ["i32", "i32", "buffer", "usize", "i32"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
