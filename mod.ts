// ckpt as a library: the operations of the CLI as typed functions, for ops
// toolboxes that embed it. The CLI (main.ts) is a thin layer over these.
export { check } from "./src/api/check.ts";
export type { CheckReport, ProbeResult } from "./src/api/check.ts";
export { show } from "./src/api/show.ts";
export type {
  ShownDir,
  ShownImage,
  ShownMessage,
  ShownPages,
  ShowResult,
  TaskPages,
} from "./src/api/show.ts";
export { dump, preDump, restore } from "./src/api/guarded.ts";
export type {
  DumpOptions,
  DumpResult,
  PreDumpOptions,
  PreDumpResult,
  Restored,
  RestoreOptions,
} from "./src/api/guarded.ts";
export type { CgroupRoot, ManageMode } from "./src/cgroup/options.ts";
export { CkptError, DumpError, ImageError, RestoreError, UsageError } from "./src/errors.ts";
export { listSockets } from "./src/api/sockets.ts";
export type {
  ExternalKind,
  Holder,
  OtherSocket,
  PeerInfo,
  PeerPlace,
  Requirement,
  SocketEntry,
  SocketReport,
  TreeTask,
  UnixSocket,
} from "./src/api/sockets.ts";
