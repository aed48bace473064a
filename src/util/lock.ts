// Keeps two ckpt runs off the same tree or images directory at once: an
// flock on the images directory itself (so nothing is left in it) and one on
// a per-pid lock file under /run/ckpt. flock dies with its holder, so a killed
// ckpt never leaves a stale lock behind.
import { CkptError } from "../errors.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { flock, LOCK_EX, LOCK_NB } from "../native/integrity.ts";
import { euid } from "../images/trust.ts";
import { fstat, fstatat } from "../native/fsops.ts";
import { AT_FDCWD } from "../native/integrity.ts";

/** Refused because another ckpt holds the lock. */
export class BusyError extends CkptError {
  constructor(message: string) {
    super(message);
    this.name = "BusyError";
  }
}

function lockRoot(): string {
  const me = euid();
  for (const dir of me === 0 ? ["/run/ckpt", "/tmp/ckpt-locks-0"] : [`/tmp/ckpt-locks-${me}`]) {
    try {
      Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const st = Deno.lstatSync(dir);
      // A directory someone else planted could point our lock files anywhere.
      if (st.isDirectory && st.uid === me && ((st.mode ?? 0) & 0o022) === 0) return dir;
    } catch { /* try the next place */ }
  }
  throw new CkptError("cannot create a private lock directory in /run/ckpt or /tmp");
}

/** Who holds an flock on inode `ino`, from /proc/locks. */
function flockHolder(ino: number): number | undefined {
  try {
    for (const line of Deno.readTextFileSync("/proc/locks").split("\n")) {
      const f = line.trim().split(/\s+/);
      // "1: FLOCK  ADVISORY  WRITE 1234 00:2f:5678 0 EOF"
      if (f[1] === "FLOCK" && f[5]?.split(":")[2] === String(ino)) return Number(f[4]);
    }
  } catch { /* /proc/locks unreadable: say less */ }
  return undefined;
}

function commandOf(pid: number | undefined): string {
  if (pid === undefined) return "";
  try {
    const argv = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").filter(Boolean);
    const i = argv.findIndex((a) => a === "dump" || a === "restore");
    return i >= 0 ? `: ckpt ${argv.slice(i).join(" ")}` : "";
  } catch {
    return "";
  }
}

export class Locks {
  private readonly fds: number[] = [];
  /** Lock files to remove on release, by fd. */
  private readonly paths = new Map<number, string>();

  /** Locks the images directory (which must exist). */
  dir(path: string): void {
    const fd = fdops.open(path, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
    if (!flock(fd, LOCK_EX | LOCK_NB)) {
      fdops.close(fd);
      const holder = flockHolder(Deno.statSync(path).ino ?? -1);
      throw new BusyError(
        `${path}: another ckpt${
          holder ? ` (pid ${holder}${commandOf(holder)})` : ""
        } is using this images directory; wait for it to finish`,
      );
    }
    this.fds.push(fd);
  }

  /** Locks task `pid` for `doing` ("dumping", "restoring"). The lock file
   * is removed again on release, so they do not pile up (one per pid ever
   * dumped): whoever takes the lock checks that the file it locked is still
   * the one at the path, or takes the lock again on the new one. */
  pid(pid: number, doing: string): void {
    const path = `${lockRoot()}/pid-${pid}.lock`;
    for (let tries = 0; tries < 100; tries++) {
      const fd = fdops.open(path, O.RDWR | O.CREAT | O.NOFOLLOW | O.CLOEXEC, 0o600);
      if (!flock(fd, LOCK_EX | LOCK_NB)) busy(fd, pid);
      const held = fstat(fd);
      const there = fstatat(AT_FDCWD, path);
      if (there && there.ino === held.ino && there.dev === held.dev) {
        fdops.ftruncate(fd, 0);
        fdops.writeAll(fd, new TextEncoder().encode(`${Deno.pid} ${doing}\n`));
        this.fds.push(fd);
        this.paths.set(fd, path);
        return;
      }
      // Released and removed by its holder between our open and flock.
      fdops.close(fd);
    }
    throw new CkptError(`${path}: cannot take this lock (it keeps being replaced)`);
  }

  release(): void {
    for (const fd of this.fds.splice(0)) {
      // Unlinked while still held: a waiter that opened it sees it is gone.
      const path = this.paths.get(fd);
      if (path) {
        try {
          Deno.removeSync(path);
        } catch { /* gone already */ }
        this.paths.delete(fd);
      }
      fdops.close(fd);
    }
  }
}

/** Refuses: another ckpt holds the lock of pid (fd is closed). */
function busy(fd: number, pid: number): never {
  const buf = new Uint8Array(64);
  let text = "";
  try {
    text = new TextDecoder().decode(buf.subarray(0, fdops.pread(fd, buf, 0)));
  } catch { /* empty */ }
  fdops.close(fd);
  const [holder, what] = text.trim().split(" ");
  throw new BusyError(
    `another ckpt is ${what || "working on"} pid ${pid}${
      holder ? ` (ckpt pid ${holder})` : ""
    }; wait for it to finish`,
  );
}
