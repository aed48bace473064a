// Library form of `ckpt show`: the same validation and the same JSON shape
// the CLI prints, as a typed value.
import { showPath } from "../images/show.ts";
import type { ShowResult } from "../images/show.ts";

export type {
  ShownDir,
  ShownImage,
  ShownMessage,
  ShownPages,
  ShowResult,
  TaskPages,
} from "../images/show.ts";

/** Reads an image file or a whole images directory. Damaged, foreign or
 * too-new images reject with an ImageError naming the file. */
export function show(path: string): Promise<ShowResult> {
  return showPath(path);
}
