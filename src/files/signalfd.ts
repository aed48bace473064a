// signalfd: its mask and flags. The signals it reads are the reading task's
// own pending signals, restored with the task, so they stay pending for it.
import { create } from "@bufbuild/protobuf";
import { FileKind, SignalFdFileSchema } from "../gen/ckpt/images_pb.ts";
import { O } from "../native/mod.ts";
import { anonfd } from "../native/anonfd.ts";
import type { FileKindOps } from "./kind.ts";

export const signalfd: FileKindOps = {
  name: "signalfd",
  kinds: [FileKind.FILE_SIGNALFD],

  claims: (fd) => fd.link === "anon_inode:[signalfd]",

  dump(fd) {
    return {
      kind: FileKind.FILE_SIGNALFD,
      signalfd: create(SignalFdFileSchema, {
        sigmask: BigInt(`0x${fd.info.get("sigmask") ?? "0"}`),
        flags: fd.flags & O.NONBLOCK,
      }),
    };
  },

  validate(f, fail) {
    f.signalfd ?? fail("signalfd details missing");
  },

  open(f) {
    const s = f.signalfd!;
    return anonfd.signalfd(s.sigmask, O.CLOEXEC | (s.flags & O.NONBLOCK));
  },
};
