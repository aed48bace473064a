// Character devices a program may hold and ckpt can open again by path:
// /dev/null, /dev/zero, /dev/full and the random sources. Terminals are
// tty.ts's (listed before this kind).
import { create } from "@bufbuild/protobuf";
import { ChrFileSchema, FileKind } from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import type { FileKindOps } from "./kind.ts";
import { OPEN_MASK } from "./open_flags.ts";
import { validPath } from "./regular.ts";
import { S_IF } from "../native/fsops.ts";

const CHR_ALLOWED = /^\/dev\/(null|zero|full|random|urandom)$/;

export const chr: FileKindOps = {
  name: "character device",
  kinds: [FileKind.FILE_CHR],

  claims: (fd) => fd.link.startsWith("/") && fd.st.isCharDevice === true,

  dump(fd) {
    if (!CHR_ALLOWED.test(fd.link)) {
      throw new DumpError(`${fd.where}: character device ${fd.link} cannot be dumped`);
    }
    return {
      kind: FileKind.FILE_CHR,
      chr: create(ChrFileSchema, { path: fd.link, flags: fd.flags, rdev: fd.st.rdev ?? 0 }),
    };
  },

  validate(f, fail) {
    const c = f.chr ?? fail("device details missing");
    if (!validPath(c.path)) {
      fail(`device path ${JSON.stringify(c.path.slice(0, 80))} is not absolute`);
    }
    // Older images recorded terminals here, restored as a dup of fd 0.
    if (!CHR_ALLOWED.test(c.path)) fail(`${c.path} is not a device this ckpt restores; dump again`);
  },

  open(f, ctx, where) {
    const c = f.chr!;
    // A device is what its number says (the same on any machine).
    const rdev = c.rdev ? BigInt(c.rdev) : undefined;
    return ctx.openPath(c.path, c.flags & OPEN_MASK, where, { type: S_IF.CHR, rdev });
  },

  inheritKey: (f) => f.chr?.path,
};
