// ffi/restore.zig
export const restoreSymbols = {
  ck_restorer_size: { parameters: [], result: "u64" },
  ck_region_size: { parameters: ["u64"], result: "u64" },
  ck_restore_spawn: { parameters: ["buffer", "usize", "i32", "i32"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
