// ckpt as a library: the operations of the CLI as typed functions.
export { show } from "./src/api/show.ts";
export type {
  ShownDir,
  ShownImage,
  ShownMessage,
  ShownPages,
  ShowResult,
  TaskPages,
} from "./src/api/show.ts";
export { CkptError, ImageError } from "./src/errors.ts";
