// ffi/sockdiag.zig
export const sockdiagSymbols = {
  ck_unix_diag: { parameters: ["buffer", "usize", "u32", "u32"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
