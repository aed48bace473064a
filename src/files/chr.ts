// Character devices a program may hold and ckpt can open again by path:
// /dev/null, /dev/zero, random sources, and terminals (with --shell-job, the
// restoring terminal stands in for the dumped one).
import { create } from "@bufbuild/protobuf";
import { ChrFileSchema, FileKind } from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import { fd as fdops } from "../native/mod.ts";
import type { FileKindOps } from "./kind.ts";
import { OPEN_MASK } from "./open_flags.ts";
import { validPath } from "./regular.ts";

const CHR_ALLOWED = /^\/dev\/(null|zero|full|random|urandom|tty|pts\/\d+|ptmx|console|tty\d*)$/;
const TTY = /^\/dev\/(tty\d*|pts\/\d+|console)$/;

export const chr: FileKindOps = {
  name: "character device",
  kinds: [FileKind.FILE_CHR],

  claims: (fd) => fd.link.startsWith("/") && fd.st.isCharDevice === true,

  dump(fd, ctx) {
    if (!CHR_ALLOWED.test(fd.link)) {
      throw new DumpError(`${fd.where}: character device ${fd.link} cannot be dumped`);
    }
    if (TTY.test(fd.link) && !ctx.shellJob) {
      throw new DumpError(
        `${fd.where} is a terminal; dump with --shell-job to restore it on the restoring terminal`,
      );
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
  },

  open(f, ctx, where) {
    const c = f.chr!;
    if (ctx.shellJob && TTY.test(c.path)) return fdops.dupAbove(0, 100);
    return ctx.openPath(c.path, c.flags & OPEN_MASK, where);
  },

  inheritKey: (f) => f.chr?.path,
};
