// /proc/PID/mountinfo in full: every field of every line, as the kernel
// prints it (proc(5)), paths unescaped, per-mount options turned into the
// MS_* flags mount(2) takes, the filesystem's own options kept as text.
import { readProcText } from "../proc/read.ts";

export const MS = {
  RDONLY: 1,
  NOSUID: 2,
  NODEV: 4,
  NOEXEC: 8,
  REMOUNT: 32,
  NOATIME: 1024,
  NODIRATIME: 2048,
  BIND: 4096,
  MOVE: 8192,
  REC: 16384,
  PRIVATE: 1 << 18,
  SLAVE: 1 << 19,
  SHARED: 1 << 20,
  RELATIME: 1 << 21,
  STRICTATIME: 1 << 24,
} as const;

/** The per-mount flags a bind remount can set (and so must be given back). */
export const MOUNT_FLAGS = MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC | MS.NOATIME |
  MS.NODIRATIME | MS.RELATIME | MS.STRICTATIME;

export interface MountLine {
  id: number;
  parent: number;
  major: number;
  minor: number;
  /** The directory of its filesystem that shows here ("/" for all of it). */
  root: string;
  /** Where it is mounted, as the reading task sees it. */
  point: string;
  /** Per-mount MS_* flags (an atime mode is always set: STRICTATIME when the
   * line names none). */
  flags: number;
  /** Peer group it is in (shared:N), 0 if none. */
  shared: number;
  /** Peer group it receives from (master:N), 0 if none. */
  master: number;
  unbindable: boolean;
  fstype: string;
  source: string;
  /** The filesystem's options as printed, without "ro"/"rw". */
  options: string;
  sbReadonly: boolean;
}

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

const WORDS: Record<string, number> = {
  ro: MS.RDONLY,
  nosuid: MS.NOSUID,
  nodev: MS.NODEV,
  noexec: MS.NOEXEC,
  noatime: MS.NOATIME,
  nodiratime: MS.NODIRATIME,
  relatime: MS.RELATIME,
};

export function mountFlags(words: string): number {
  let f = 0;
  for (const w of words.split(",")) f |= WORDS[w] ?? 0;
  if (!(f & (MS.NOATIME | MS.RELATIME))) f |= MS.STRICTATIME;
  return f;
}

/** The words of flags, as mountinfo prints them (for messages). */
export function flagWords(f: number): string {
  const out = [f & MS.RDONLY ? "ro" : "rw"];
  for (const [w, bit] of Object.entries(WORDS)) if (bit !== MS.RDONLY && f & bit) out.push(w);
  return out.join(",");
}

/** One mountinfo line; undefined for a line that is not one. */
export function parseMountLine(line: string): MountLine | undefined {
  const c = line.split(" ");
  const dash = c.indexOf("-", 6);
  if (c.length < 10 || dash < 0 || c.length < dash + 4) return undefined;
  const [major, minor] = c[2].split(":").map(Number);
  let shared = 0, master = 0, unbindable = false;
  for (const opt of c.slice(6, dash)) {
    const [k, v] = opt.split(":");
    if (k === "shared") shared = Number(v);
    else if (k === "master") master = Number(v);
    else if (k === "unbindable") unbindable = true;
  }
  const sb = c.slice(dash + 3).join(" ").split(",");
  return {
    id: Number(c[0]),
    parent: Number(c[1]),
    major,
    minor,
    root: unescape(c[3]),
    point: unescape(c[4]),
    flags: mountFlags(c[5]),
    shared,
    master,
    unbindable,
    fstype: unescape(c[dash + 1]),
    source: unescape(c[dash + 2]),
    options: sb.filter((o) => o !== "ro" && o !== "rw").join(","),
    sbReadonly: sb.includes("ro"),
  };
}

export function parseMountInfo(text: string): MountLine[] {
  const out: MountLine[] = [];
  for (const line of text.split("\n")) {
    const m = line ? parseMountLine(line) : undefined;
    if (m) out.push(m);
  }
  return out;
}

export function readMountInfo(pid: number | "self"): MountLine[] {
  return parseMountInfo(readProcText(pid, "mountinfo"));
}
