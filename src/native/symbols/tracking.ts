// ffi/tracking.zig
export const trackingSymbols = {
  ck_pagemap_scan: {
    parameters: ["i32", "buffer", "buffer", "u64", "buffer"],
    result: "i64",
  },
  ck_uffd_wp_async: { parameters: ["i32"], result: "i64" },
  ck_uffd_register_wp: { parameters: ["i32", "u64", "u64"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
