// ckpt as a library: the same operations as the CLI, as typed functions.
export { listSockets, type SocketReport } from "./src/api/sockets.ts";
export type {
  ExternalKind,
  Holder,
  OtherSocket,
  PeerInfo,
  PeerPlace,
  Requirement,
  SocketEntry,
  TreeTask,
  UnixSocket,
} from "./src/api/sockets.ts";
