// ffi/creds.zig
export const credsSymbols = {
  ck_cred_saved_size: { parameters: [], result: "u64" },
  ck_cred_enter: {
    parameters: ["u32", "u32", "buffer", "u32", "u64", "buffer"],
    result: "i64",
  },
  ck_cred_leave: { parameters: ["buffer"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
