// ffi/restore.zig
export const restoreSymbols = {
  ck_restorer_size: { parameters: [], result: "u64" },
  ck_region_size: { parameters: ["u64", "u64"], result: "u64" },
  ck_restore_spawn: {
    parameters: ["buffer", "usize", "i32", "i64", "u32", "u64", "buffer", "u32", "buffer", "i32"],
    result: "i64",
  },
  ck_restore_spawn_sibling: {
    parameters: [
      "buffer",
      "usize",
      "i32",
      "i64",
      "u32",
      "i32",
      "i32",
      "u64",
      "buffer",
      "u32",
      "buffer",
      "i32",
    ],
    result: "i64",
  },
  ck_plan_layout: { parameters: ["buffer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;
