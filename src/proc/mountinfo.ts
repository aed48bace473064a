// /proc/PID/mountinfo and the mount an fd is on (its fdinfo mnt_id).
import { readProcText } from "./read.ts";

export interface Mount {
  id: number;
  /** The superblock's device, "MAJOR:MINOR". */
  dev: string;
  /** The directory of the filesystem mounted here ("/" for its root). */
  root: string;
  /** Where it is mounted. */
  point: string;
}

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

export function readMounts(pid: number | "self" = "self"): Mount[] {
  const out: Mount[] = [];
  for (const line of readProcText(pid, "mountinfo").split("\n")) {
    const c = line.split(" ");
    if (c.length < 5) continue;
    out.push({ id: Number(c[0]), dev: c[2], root: unescape(c[3]), point: unescape(c[4]) });
  }
  return out;
}

/** "MAJOR:MINOR" of a device number in the kernel's own encoding
 * (MAJOR << 20 | MINOR), as fdinfo prints s_dev. */
export function kernelDevName(sdev: number): string {
  return `${sdev >>> 20}:${sdev & 0xfffff}`;
}

/** The mount id of fd n of ckpt itself. */
export function mountIdOf(n: number): number {
  const m = /^mnt_id:\s*(\d+)$/m.exec(readProcText("self", `fdinfo/${n}`));
  return m ? Number(m[1]) : -1;
}
