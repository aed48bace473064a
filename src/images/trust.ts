// Whether images may be trusted: restore turns their bytes into running
// processes with ckpt's privileges, so every source of them must be the
// caller's and writable by nobody else — the images directory, each of its
// parent directories (whoever may rename an entry of one can put other
// images in its place), every parent image of an incremental dump
// (--prev-images-dir), and a --stream read from a file or FIFO on stdin (a
// pipe or socket is what the operator's own command line connected, e.g.
// `ssh host ckpt dump --stream | ckpt restore --stream`). --trust-images
// (trustImages) overrides this for images the caller has checked.
import { ImageError } from "../errors.ts";
import { fstat, S_IF, S_IFMT } from "../native/fsops.ts";

export function euid(): number {
  const m = /^Uid:\s+\d+\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Number(m[1]) : Deno.uid() ?? 0;
}

const HINT = "check where the images came from, or pass --trust-images";
const STICKY = 0o1000;

function check(
  path: string,
  st: { uid: number | null; mode: number | null },
  me: number,
  what: string,
) {
  const mode = (st.mode ?? 0) & 0o7777;
  if (st.uid !== me) {
    throw new ImageError(
      path,
      `${what} is owned by uid ${st.uid}, not by you (uid ${me}); restore refuses it: ${HINT}`,
    );
  }
  if (mode & 0o022) {
    throw new ImageError(
      path,
      `${what} is writable by ${mode & 0o002 ? "others" : "its group"} (mode 0${
        mode.toString(8)
      }); restore refuses it: ${HINT}`,
    );
  }
}

/** Each directory above `real` (a path without symlinks): owned by root or
 * the caller, and writable by nobody else unless sticky (then nobody else
 * can rename the caller's or root's entries in it). */
function checkAncestors(real: string, me: number, what: string, hint = HINT): void {
  const parts = real.split("/").filter(Boolean);
  for (let i = parts.length - 1; i >= 0; i--) {
    const dir = "/" + parts.slice(0, i).join("/");
    const st = Deno.lstatSync(dir);
    const mode = (st.mode ?? 0) & 0o7777;
    if (st.uid !== me && st.uid !== 0) {
      throw new ImageError(
        real,
        `${dir}, a directory above ${what}, is owned by uid ${st.uid}, who could put other ` +
          `images in their place; ${hint}`,
      );
    }
    if ((mode & 0o022) && !(mode & STICKY)) {
      throw new ImageError(
        real,
        `${dir}, a directory above ${what}, is writable by ${
          mode & 0o002 ? "others" : "its group"
        } (mode 0${mode.toString(8)}), who could put other images in their place; ${hint}`,
      );
    }
  }
}

/** Dump: why restore would not trust images written to `dir` (itself, if
 * it exists, or a directory above it another user may change), or
 * undefined. */
export function untrustedPlace(dir: string): string | undefined {
  const me = euid();
  const rest: string[] = [];
  let d = dir.startsWith("/") ? dir : `${Deno.cwd()}/${dir}`;
  d = d.replace(/\/+$/, "") || "/";
  for (;;) {
    try {
      Deno.lstatSync(d);
      break;
    } catch {
      rest.unshift(d.slice(d.lastIndexOf("/") + 1));
      d = d.slice(0, d.lastIndexOf("/")) || "/";
    }
  }
  const hint = "restore would refuse the images";
  try {
    // Only what exists is looked at: the directories dump makes are its own.
    const real = [Deno.realPathSync(d), ...rest.slice(0, 1)].join("/").replace(/^\/\//, "/");
    if (rest.length === 0) {
      const st = Deno.statSync(real);
      const mode = (st.mode ?? 0) & 0o7777;
      if (st.uid !== me) return `${dir} is owned by uid ${st.uid}; ${hint}`;
      if (mode & 0o022) {
        return `${dir} is writable by ${mode & 0o002 ? "others" : "its group"} (mode 0${
          mode.toString(8)
        }); ${hint}`;
      }
    }
    checkAncestors(real, me, "the images directory", hint);
  } catch (err) {
    if (err instanceof ImageError) return err.message.replace(/^[^:]*: /, "");
    throw err;
  }
  return undefined;
}

/** Throws unless the directory, its parents and each of its entries are the
 * caller's own and writable only by the caller; image files must not be
 * symlinks. Returns the directory's real path, to be used from then on (the
 * checks hold for it, not for a symlink to it). */
export function checkTrust(dir: string, what = "the images directory"): string {
  const me = euid();
  let real: string;
  let st: Deno.FileInfo;
  try {
    real = Deno.realPathSync(dir);
    st = Deno.statSync(real);
  } catch {
    throw new ImageError(dir, "no such images directory");
  }
  if (!st.isDirectory) throw new ImageError(dir, "not a directory");
  check(dir, st, me, what);
  checkAncestors(real, me, what);
  for (const e of Deno.readDirSync(real)) {
    const path = `${real}/${e.name}`;
    const est = Deno.lstatSync(path);
    if (e.name.endsWith(".img") && !est.isFile) {
      throw new ImageError(path, `is not a regular file (a symlink?); restore refuses it: ${HINT}`);
    }
    check(path, est, me, "the image");
  }
  return real;
}

/** `restore --stream`: stdin that is a file or a named FIFO is checked like
 * an images directory (owner, mode, the directories above it). */
export function checkStreamTrust(): void {
  const st = fstat(0, "stdin");
  const type = st.mode & S_IFMT;
  let link = "";
  try {
    link = Deno.readLinkSync("/proc/self/fd/0");
  } catch { /* no /proc: judge by the type alone */ }
  const anonymous = type === S_IF.FIFO && link.startsWith("pipe:[");
  if (type !== S_IF.REG && (type !== S_IF.FIFO || anonymous)) return;
  const what = type === S_IF.REG ? "the image stream file on stdin" : "the FIFO on stdin";
  const me = euid();
  const name = link.startsWith("/") ? link : "stdin";
  check(name, { uid: st.uid, mode: st.mode }, me, what);
  if (link.startsWith("/") && !link.endsWith(" (deleted)")) {
    checkAncestors(link, me, what);
  }
}
