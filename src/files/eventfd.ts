// eventfd: its counter, flags and semaphore mode.
import { create } from "@bufbuild/protobuf";
import { EventFdFileSchema, FileKind } from "../gen/ckpt/images_pb.ts";
import { fd as fdops, O } from "../native/mod.ts";
import type { FileKindOps } from "./kind.ts";

const EFD_SEMAPHORE = 1;

export const eventfd: FileKindOps = {
  name: "eventfd",
  kinds: [FileKind.FILE_EVENTFD],

  claims: (fd) => fd.link === "anon_inode:[eventfd]",

  dump(fd) {
    return {
      kind: FileKind.FILE_EVENTFD,
      eventfd: create(EventFdFileSchema, {
        count: BigInt(`0x${fd.info.get("eventfd-count") ?? "0"}`),
        flags: fd.flags,
        semaphore: fd.info.get("eventfd-semaphore") === "1",
      }),
    };
  },

  validate(f, fail) {
    const e = f.eventfd ?? fail("eventfd details missing");
    if (e.count === 0xffffffffffffffffn) fail("eventfd count overflows");
  },

  open(f) {
    const e = f.eventfd!;
    const n = fdops.eventfd(
      0,
      (e.flags & O.NONBLOCK) | O.CLOEXEC | (e.semaphore ? EFD_SEMAPHORE : 0),
    );
    if (e.count > 0n) fdops.write(n, new Uint8Array(new BigUint64Array([e.count]).buffer));
    return n;
  },
};
