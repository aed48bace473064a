// ffi/probe.zig
export const probeSymbols = {
  ck_probe_clone3_set_tid: { parameters: ["i32"], result: "i64" },
  ck_probe_userfaultfd: { parameters: ["buffer", "buffer"], result: "i64" },
  ck_probe_pagemap_scan: { parameters: [], result: "i64" },
  ck_probe_unix_diag: { parameters: ["u32", "buffer"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
