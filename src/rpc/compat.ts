// What ckpt says when asked as CRIU: the CRIU version whose RPC and options
// it answers to (runtimes refuse anything below 3.0 and pick their code
// paths by it), and the features FEATURE_CHECK and `criu check --feature`
// ask about, as this kernel offers them to ckpt.
import { probePagemapScan, probeUserfaultfd } from "../native/probe.ts";
import { VERSION } from "../version.ts";
import { cloneWithPid } from "../check/clone.ts";

/** CRIU 4.2: the release ckpt is measured against and whose rpc.proto
 * (fields up to 74) src/gen/criu is generated from. */
export const CRIU_COMPAT = { major: 4, minor: 2, sublevel: 0 } as const;

export const compatVersion = () =>
  `${CRIU_COMPAT.major}.${CRIU_COMPAT.minor}${
    CRIU_COMPAT.sublevel ? `.${CRIU_COMPAT.sublevel}` : ""
  }`;

/** `criu --version`: CRIU's first line, then what this really is. */
export function versionText(): string {
  return [
    `Version: ${compatVersion()}`,
    `ckpt ${VERSION}: a checkpoint/restore tool answering CRIU's command line and RPC ` +
    `(it is not CRIU; images are ckpt's own)`,
  ].join("\n");
}

// UFFD_FEATURE_* bits ckpt's tracking and lazy restore rely on.
const WP_ASYNC = 1n << 15n;
const LAZY_EVENTS = (1n << 1n) | (1n << 2n) | (1n << 3n) | (1n << 6n); // fork remap remove unmap

function uffdFeatures(): bigint {
  try {
    return probeUserfaultfd().features;
  } catch {
    return 0n;
  }
}

/** Pre-dump write tracking: asynchronous write-protect and PAGEMAP_SCAN. */
export function hasMemTrack(): boolean {
  if ((uffdFeatures() & WP_ASYNC) === 0n) return false;
  try {
    probePagemapScan();
    return true;
  } catch {
    return false;
  }
}

/** Lazy restore: a userfaultfd with the events ckpt follows. */
export function hasLazyPages(): boolean {
  return (uffdFeatures() & LAZY_EVENTS) === LAZY_EVENTS;
}

/** `criu check --feature NAME`: the ones ckpt can answer for itself. */
export const FEATURES: Record<string, () => boolean> = {
  mem_dirty_track: hasMemTrack,
  uffd: () => uffdFeatures() !== 0n,
  "uffd-noncoop": hasLazyPages,
  lazy_pages: hasLazyPages,
  clone3_set_tid: () => {
    try {
      cloneWithPid();
      return true;
    } catch {
      return false;
    }
  },
  pidfd_store: () => false,
};
