// --inherit-fd fd[N]:RES hands the restored task one of ckpt's own fds in
// place of RES. It must name a file of the dump, and fd N must be that kind
// of object (a pipe for pipe:[…], a UNIX socket of the dumped type for
// socket:[…], the same type of file for a path): a wrong number would give
// the task whatever ckpt happens to hold there. That N was handed to ckpt by
// its caller at all is checked where the command line is read
// (src/cli/caller_fds.ts).
import { type FileEntry, FileKind } from "../gen/ckpt/images_pb.ts";
import { UsageError } from "../errors.ts";
import { fstat, S_IF, S_IFMT, typeName } from "../native/fsops.ts";
import { NativeError } from "../native/mod.ts";
import { SO_DOMAIN, SO_TYPE, SOL_SOCKET, unixsk } from "../native/unixsk.ts";
import { kindOf } from "./registry.ts";

const TYPE_NAMES: Record<number, string> = { 1: "stream", 2: "dgram", 5: "seqpacket" };

export function checkInherited(n: number, key: string, entries: Map<number, FileEntry>): void {
  const opt = `--inherit-fd fd[${n}]:${key}`;
  const f = [...entries.values()].find((e) => kindOf(e)?.inheritKey?.(e) === key);
  if (!f) throw new UsageError(`restore: ${opt}: the dump has no file ${key}`);
  let st;
  try {
    st = fstat(n);
  } catch (err) {
    const why = err instanceof NativeError && err.errno === 9 ? "not open" : String(err);
    throw new UsageError(`restore: ${opt}: fd ${n} is ${why}`);
  }
  const type = st.mode & S_IFMT;
  const is = typeName(st.mode);
  const refuse = (want: string): never => {
    throw new UsageError(`restore: ${opt}: fd ${n} is ${is}, not ${want}`);
  };
  switch (f.kind) {
    case FileKind.FILE_PIPE: {
      let link = "";
      try {
        link = Deno.readLinkSync(`/proc/self/fd/${n}`);
      } catch { /* closed meanwhile */ }
      if (type !== S_IF.FIFO || !link.startsWith("pipe:[")) refuse("a pipe");
      return;
    }
    case FileKind.FILE_UNIX: {
      if (type !== S_IF.SOCK) refuse("a socket");
      const want = f.unix?.type ?? 0;
      const domain = unixsk.getInt(n, SOL_SOCKET, SO_DOMAIN);
      const got = unixsk.getInt(n, SOL_SOCKET, SO_TYPE);
      if (domain !== 1 || got !== want) {
        throw new UsageError(
          `restore: ${opt}: fd ${n} is a ${domain === 1 ? "UNIX" : `family ${domain}`} ` +
            `${TYPE_NAMES[got] ?? `type ${got}`} socket, not a UNIX ${
              TYPE_NAMES[want] ?? want
            } socket`,
        );
      }
      return;
    }
    case FileKind.FILE_FIFO:
      if (type !== S_IF.FIFO) refuse("a FIFO");
      return;
    case FileKind.FILE_DIR:
      if (type !== S_IF.DIR) refuse("a directory");
      return;
    case FileKind.FILE_CHR:
      if (type !== S_IF.CHR) refuse("a character device");
      return;
    case FileKind.FILE_REG:
      if (type !== S_IF.REG) refuse("a regular file");
      return;
    default:
      // Kinds added later say what they need themselves; a path at least
      // names a file.
      if (type === S_IF.SOCK || type === S_IF.FIFO) refuse("a file");
  }
}
