// Write tracking between a pre-dump and the dump after it. This kernel has
// no soft-dirty bits, so ckpt makes each task create a userfaultfd, puts it
// in asynchronous write-protect mode over the task's private memory (from
// outside: the ioctls act on the uffd's address space), and write-protects
// every page. The kernel then lifts the protection of a page on its first
// write, without stopping the task, and PAGEMAP_SCAN reports it as written.
// The uffd stays open in the task until the next dump: were it closed, the
// kernel would forget which pages were written.
import { create } from "@bufbuild/protobuf";
import {
  type MemoryTracking,
  MemoryTrackingSchema,
  type Vma,
  VmaKind,
} from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import { fd as fdops, NativeError, O, ptrace } from "../native/mod.ts";
import { errnoText } from "../native/errno.ts";
import {
  PAGE_IS,
  pagemapScan,
  PM_SCAN_WP_MATCHING,
  uffdRegisterWp,
  uffdWpAsync,
} from "../native/tracking.ts";
import { readLimits, readStat } from "../proc/status.ts";
import { processExists } from "../proc/read.ts";
import { Frozen } from "./freeze.ts";
import { listFds, type RawFd, readFds } from "../native/fdtable.ts";
import { log } from "../util/log.ts";

const SYS = { close: 3, fcntl: 72, userfaultfd: 323 } as const;
const F_DUPFD_CLOEXEC = 1030;
// O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY: user mode only needs no
// privilege, and asynchronous write-protect never hands a fault to anyone.
const UFFD_FLAGS = 0x80000 | 0x800 | 1;
const UFFD_LINK = "anon_inode:[userfaultfd]";

interface Tracked {
  /** The uffd's number in the task. */
  fd: number;
  inode: bigint;
  startTime: bigint;
  /** ckpt's own copy, which keeps the tracking alive while ckpt works. */
  uffd: number;
  /** Started by this run (undone if the run fails). */
  fresh: boolean;
}

function startTime(pid: number): bigint {
  return BigInt(readStat(pid).field(22));
}

function inodeOf(fd: number): bigint {
  return BigInt(Deno.statSync(`/proc/self/fd/${fd}`).ino ?? 0);
}

function takeFd(pid: number, fd: number): number {
  const pidfd = fdops.pidfdOpen(pid);
  try {
    return fdops.pidfdGetfd(pidfd, fd, `the userfaultfd (fd ${fd}) of pid ${pid}`);
  } finally {
    fdops.close(pidfd);
  }
}

function inject(pid: number, nr: number, args: (bigint | number)[], what: string): number {
  const r = ptrace.injectSyscall(pid, nr, args);
  if (r < 0n && r > -4096n) {
    throw new DumpError(`${what} in pid ${pid} failed: ${errnoText(Number(-r))}`);
  }
  return Number(r);
}

/** Mappings whose pages are saved and can be tracked; shared memory is
 * always saved whole (another task's writes would not show here). */
function trackable(v: Vma): boolean {
  return v.kind === VmaKind.VMA_ANON_PRIVATE || v.kind === VmaKind.VMA_FILE_PRIVATE;
}

// UFFD_FEATURE_WP_ASYNC, and WP_UNPOPULATED which the kernel adds to it,
// and its internal "API done" bit: what fdinfo shows for ckpt's uffds.
const TRACKING_FEATURES = 0x8000n | 0x2000n | 0x80000000n;

/** Where a task's tracking uffd goes: near the top of its first 1024 fds
 * (or of its fd limit, if lower), far from the numbers it uses itself. */
function trackingFdBase(pid: number): number {
  const nofile = readLimits(pid).find((l) => l.resource === 7)?.cur ?? 1024n;
  return Math.max(3, Math.min(Number(nofile), 1024) - 24);
}

/** Whether fd n of pid (its fdinfo text given) is a tracking uffd exactly
 * as ckpt makes them: high (above where programs' own fds live),
 * O_CLOEXEC|O_NONBLOCK, and with no feature but asynchronous write-protect —
 * a fault-handling uffd of the program itself always has others. */
function leftByPreDump(pid: number, n: number, info: string): boolean {
  if (n < trackingFdBase(pid)) return false;
  const flags = Number.parseInt(/^flags:\s+(\d+)/m.exec(info)?.[1] ?? "0", 8);
  const api = /^API:\s+(\w+):(\w+):/m.exec(info);
  if ((flags & 0x80800) !== 0x80800 || !api) return false;
  return BigInt(`0x${api[2]}`) === TRACKING_FEATURES;
}

/** The userfaultfds of a task's fd table (as read by readFds). */
function uffds(table: RawFd[]): RawFd[] {
  return table.filter((r) => !r.errno && r.link === UFFD_LINK);
}

/** A task's fd table, read for the tracking alone. */
export function fdTableOf(pid: number): RawFd[] {
  try {
    return readFds(pid, listFds(pid));
  } catch {
    return []; // gone
  }
}

/** The fds of pid (its fd table given) that are write tracking a pre-dump
 * left (a dry run leaves them where they are, and does not count them as
 * the task's). */
export function trackingLeftIn(pid: number, table: RawFd[]): number[] {
  return uffds(table).filter((r) => leftByPreDump(pid, r.fd, r.infoText)).map((r) => r.fd);
}

export class MemoryTracker {
  private readonly tracked = new Map<number, Tracked>();
  /** Every tracking uffd the pre-dump recorded, kept or not: copies a
   * child inherited by forking outlive the parent's. */
  private readonly inodes = new Set<bigint>();

  /** Notes a tracking uffd a pre-dump left, so that copies of it are
   * recognised wherever they are. */
  remember(rec: MemoryTracking | undefined): void {
    if (rec) this.inodes.add(rec.inode);
  }

  /** Takes over the tracking a pre-dump left in pid (every task must be
   * frozen); false when it is gone: the task exec'd, closed the fd, or the
   * pid now belongs to another process. Its pages are then all saved. */
  adopt(pid: number, rec: MemoryTracking | undefined): boolean {
    if (!rec) return false;
    this.remember(rec);
    let why = "";
    try {
      if (startTime(pid) !== rec.startTime) why = "the pid belongs to another process now";
      else if (Deno.readLinkSync(`/proc/${pid}/fd/${rec.fd}`) !== UFFD_LINK) why = "fd replaced";
    } catch {
      why = `its fd ${rec.fd} was closed`;
    }
    if (!why) {
      const uffd = takeFd(pid, rec.fd);
      if (inodeOf(uffd) === rec.inode) {
        this.tracked.set(pid, {
          fd: rec.fd,
          inode: rec.inode,
          startTime: rec.startTime,
          uffd,
          fresh: false,
        });
        return true;
      }
      fdops.close(uffd);
      why = `fd ${rec.fd} is another userfaultfd`;
    }
    log.info(
      `pid ${pid}: write tracking since the pre-dump is gone (${why}); saving all its pages`,
    );
    return false;
  }

  /** Makes the frozen task pid create its tracking userfaultfd, parked on a
   * high fd number so the task's next open() gets the number it expects. */
  start(pid: number): void {
    const low = inject(pid, SYS.userfaultfd, [UFFD_FLAGS], "userfaultfd()");
    let fd = low;
    try {
      const base = Math.max(low + 1, trackingFdBase(pid));
      fd = inject(pid, SYS.fcntl, [low, F_DUPFD_CLOEXEC, base], "fcntl(F_DUPFD_CLOEXEC)");
    } catch { /* keep the low number: only cosmetic */ }
    if (fd !== low) inject(pid, SYS.close, [low], "close()");
    const uffd = takeFd(pid, fd);
    this.tracked.set(pid, {
      fd,
      inode: inodeOf(uffd),
      startTime: startTime(pid),
      uffd,
      fresh: true,
    });
    try {
      uffdWpAsync(uffd, `pid ${pid}`);
    } catch (err) {
      if (err instanceof NativeError && err.errno === 22) {
        throw new DumpError(
          "this kernel lacks userfaultfd asynchronous write-protect (UFFD_FEATURE_WP_ASYNC, " +
            "Linux 6.7+), which pre-dump needs to see written pages; use a plain dump",
        );
      }
      throw err;
    }
  }

  /** Registers every trackable mapping of pid (new ones too) and
   * write-protects all their pages: from now on, writes show. */
  protect(pid: number, vmas: Vma[]): void {
    const t = this.tracked.get(pid);
    if (!t) return;
    const pm = fdops.open(`/proc/${pid}/pagemap`, O.RDONLY | O.CLOEXEC);
    try {
      for (const v of vmas.filter(trackable)) {
        try {
          uffdRegisterWp(t.uffd, v.start, v.end - v.start, `pid ${pid}`);
        } catch (err) {
          // Its pages then always count as written: saved every time.
          log.debug(
            `pid ${pid}: mapping ${v.name || "anon"} at 0x${v.start.toString(16)} ` +
              `is not tracked: ${(err as Error).message}`,
          );
          continue;
        }
        pagemapScan(pm, v.start, v.end, {
          flags: PM_SCAN_WP_MATCHING,
          all: PAGE_IS.WPALLOWED | PAGE_IS.WRITTEN,
          report: PAGE_IS.WRITTEN,
        }, false);
      }
    } finally {
      fdops.close(pm);
    }
  }

  record(pid: number): MemoryTracking | undefined {
    const t = this.tracked.get(pid);
    if (!t) return undefined;
    return create(MemoryTrackingSchema, { fd: t.fd, inode: t.inode, startTime: t.startTime });
  }

  /** Closes the tracking uffds in the frozen tasks: each task's own, the
   * copies its children inherited by forking since the pre-dump, and any a
   * pre-dump left without a dump ever taking it over (a pre-dump killed
   * midway, or one never followed by its dump). `keep` spares the ones
   * this run goes on with (a pre-dump continuing its chain). The tracking
   * lives on in ckpt's copies until dispose(). `tableOf` gives a task's fd
   * table (a dump's, read once for everything); returns the fds closed. */
  closeInTasks(
    pids: number[],
    keep = false,
    tableOf: (pid: number) => RawFd[] = fdTableOf,
  ): Map<number, number[]> {
    const spare = new Set(keep ? [...this.tracked.values()].map((t) => t.inode) : []);
    for (const t of this.tracked.values()) this.inodes.add(t.inode);
    const closed = new Map<number, number[]>();
    for (const pid of pids) {
      for (const r of uffds(tableOf(pid))) {
        const ino = BigInt(r.st.ino ?? 0);
        if (spare.has(ino)) continue;
        if (!this.inodes.has(ino) && !leftByPreDump(pid, r.fd, r.infoText)) continue;
        log.debug(`pid ${pid}: closing the write-tracking userfaultfd at fd ${r.fd}`);
        inject(pid, SYS.close, [r.fd], `close() of the tracking userfaultfd (fd ${r.fd})`);
        closed.set(pid, [...(closed.get(pid) ?? []), r.fd]);
      }
    }
    return closed;
  }

  /** After a failure: the tracking this run started is taken out of the
   * tasks again, frozen anew for it when `frozen` says they run already. */
  abandon(frozen: (pid: number) => boolean): void {
    for (const [pid, t] of this.tracked) {
      if (!t.fresh || !processExists(pid)) continue;
      const again = frozen(pid) ? undefined : new Frozen();
      try {
        again?.seize(pid);
        inject(pid, SYS.close, [t.fd], "close()");
      } catch (err) {
        log.warn(`pid ${pid}: could not close the tracking userfaultfd: ${(err as Error).message}`);
      } finally {
        again?.release();
      }
    }
  }

  /** ckpt's copies. */
  dispose(): void {
    for (const t of this.tracked.values()) fdops.close(t.uffd);
    this.tracked.clear();
  }
}
