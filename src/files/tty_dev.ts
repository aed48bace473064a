// Terminal device numbers: which character devices are terminals, which are
// pseudo-terminal slaves (and their index), and where ckpt's own controlling
// terminal is. Device numbers are in the encoding stat(2) and /proc/PID/stat
// tty_nr share for these values (major bits 8-19, minor 0-7 and 20-31).
import { readStat } from "../proc/status.ts";

export const major = (rdev: number): number => (rdev >> 8) & 0xfff;
export const minor = (rdev: number): number => (rdev & 0xff) | ((rdev >>> 12) & 0xfff00);

const PTS_MAJOR = 136; // 136-143: Unix98 pty slaves
const TTYAUX_MAJOR = 5; // 5,0 /dev/tty, 5,1 /dev/console, 5,2 /dev/ptmx

export const isCurrentTty = (rdev: number): boolean =>
  major(rdev) === TTYAUX_MAJOR && minor(rdev) === 0;
export const isPtmx = (rdev: number): boolean => major(rdev) === TTYAUX_MAJOR && minor(rdev) === 2;
export const isPtsSlave = (rdev: number): boolean => major(rdev) >= PTS_MAJOR && major(rdev) <= 143;

/** Terminal character devices: virtual consoles and serial lines (4), the
 * tty/console/ptmx aliases (5), BSD ptys (2, 3), Unix98 ptys (128-143),
 * USB and other serial lines (166, 188, 204, 229). */
export function isTerminal(rdev: number, path: string): boolean {
  const m = major(rdev);
  if (m === TTYAUX_MAJOR) return minor(rdev) <= 2;
  return [2, 3, 4, 166, 188, 204, 229].includes(m) || (m >= 128 && m <= 143) ||
    /^\/dev\/(tty|pts\/|console$|ptmx$)/.test(path);
}

/** How a message names a terminal device. */
export function ttyName(rdev: number): string {
  if (isPtsSlave(rdev)) return `/dev/pts/${minor(rdev)}`;
  return `the terminal ${major(rdev)}:${minor(rdev)}`;
}

/** ckpt's controlling terminal: its device and a path to open it by, or
 * undefined when ckpt has none. */
export function ownTerminal(): { rdev: number; path: string } | undefined {
  const rdev = Number(readStat(Deno.pid).field(7));
  if (rdev === 0) return undefined;
  for (const n of [0, 1, 2]) {
    try {
      const st = Deno.statSync(`/proc/self/fd/${n}`);
      const link = Deno.readLinkSync(`/proc/self/fd/${n}`);
      if (st.isCharDevice && st.rdev === rdev && link.startsWith("/dev/")) {
        return { rdev, path: link };
      }
    } catch { /* not open */ }
  }
  if (isPtsSlave(rdev)) return { rdev, path: `/dev/pts/${minor(rdev)}` };
  for (const e of Deno.readDirSync("/dev")) {
    const path = `/dev/${e.name}`;
    try {
      const st = Deno.statSync(path);
      if (st.isCharDevice && st.rdev === rdev) return { rdev, path };
    } catch { /* raced away */ }
  }
  return { rdev, path: "/dev/tty" };
}
