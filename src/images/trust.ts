// Whether an images directory may be trusted: restore turns its bytes into a
// running process with ckpt's privileges, so the directory and every image
// must belong to the caller and be writable by nobody else. --trust-images
// (trustImages) overrides this for images the caller has checked.
import { ImageError } from "../errors.ts";

export function euid(): number {
  const m = /^Uid:\s+\d+\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Number(m[1]) : Deno.uid() ?? 0;
}

const HINT = "check where the images came from, or pass --trust-images";

function check(path: string, st: Deno.FileInfo, me: number, what: string): void {
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

/** Throws unless the directory and each of its entries are the caller's own
 * and writable only by the caller; image files must not be symlinks. */
export function checkTrust(dir: string): void {
  const me = euid();
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(dir);
  } catch {
    throw new ImageError(dir, "no such images directory");
  }
  if (!st.isDirectory) throw new ImageError(dir, "not a directory");
  check(dir, st, me, "the images directory");
  for (const e of Deno.readDirSync(dir)) {
    const path = `${dir}/${e.name}`;
    const est = Deno.lstatSync(path);
    if (e.name.endsWith(".img") && !est.isFile) {
      throw new ImageError(path, `is not a regular file (a symlink?); restore refuses it: ${HINT}`);
    }
    check(path, est, me, "the image");
  }
}
