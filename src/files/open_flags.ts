// Open flags as restore uses them: what may be passed to open(2) again, and
// the status flags that are set on an open file afterwards.
import { O } from "../native/mod.ts";

export const F_SETFL = 4;
/** Flags of the dumped file that open(2) takes again (no creation, no truncation). */
export const OPEN_MASK = ~(O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY | O.CLOEXEC);
/** Status flags fcntl(F_SETFL) can change on an open file. */
export const STATUS_FLAGS = O.APPEND | O.NONBLOCK | 0o40000 /* O_DIRECT */ |
  0o1000000 /* O_NOATIME */;
