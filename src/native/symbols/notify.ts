// ffi/notify.zig
export const notifySymbols = {
  ck_inotify_init1: { parameters: ["i32"], result: "i64" },
  ck_inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i64" },
  ck_inotify_rm_watch: { parameters: ["i32", "i32"], result: "i64" },
  ck_inotify_burn: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i64" },
  ck_fanotify_init: { parameters: ["u32", "u32"], result: "i64" },
  ck_fanotify_mark: { parameters: ["i32", "u32", "u64", "i32", "buffer"], result: "i64" },
  ck_open_by_handle_at: { parameters: ["i32", "buffer", "i32"], result: "i64" },
  ck_fionread: { parameters: ["i32"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;
