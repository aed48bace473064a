// Memory-side features: mapped files, the vDSO block, and page tracking.
import { ERRNO, NativeError } from "../native/mod.ts";
import { probePagemapScan, probeUserfaultfd } from "../native/probe.ts";
import { readMaps } from "./maps.ts";
import { no, probe, type ProbeResult, type ProbeSpec, yes } from "./types.ts";

const MAP_FILES: ProbeSpec = {
  name: "map_files",
  required: true,
  why: "to open the very file behind each mapping, even when it was deleted or moved",
};
const VDSO: ProbeSpec = {
  name: "vvar/vdso layout",
  required: true,
  why: "to move [vvar], [vvar_vclock] and [vdso] as one block to where the tree had them",
};
const UFFD: ProbeSpec = {
  name: "userfaultfd",
  required: false,
  why: "for lazy restore (pages on first touch) and pre-dump write tracking (async write-protect)",
};
const PAGEMAP_SCAN: ProbeSpec = {
  name: "PAGEMAP_SCAN",
  required: true,
  why: "to find the pages worth saving, and the pages written since a pre-dump, in one ioctl",
};
const SOFT_DIRTY: ProbeSpec = {
  name: "soft-dirty",
  required: false,
  why: "pre-dump style write tracking (CRIU's way); ckpt does not depend on it",
};

function mapFiles(): string {
  const dir = "/proc/self/map_files";
  const entry = [...Deno.readDirSync(dir)][0];
  if (!entry) throw new Error(`${dir} is empty`);
  const target = Deno.readLinkSync(`${dir}/${entry.name}`);
  return `${dir}/${entry.name} -> ${target}`;
}

const SPECIAL = ["[vvar]", "[vvar_vclock]", "[vdso]"];
const kib = (n: bigint) => `${n / 1024n} KiB`;

function vdsoLayout(): { ok: boolean; detail: string } {
  const maps = readMaps("self").filter((m) => SPECIAL.includes(m.name));
  if (!maps.some((m) => m.name === "[vdso]")) {
    return yes("no [vdso] mapped (booted with vdso=0?): nothing to move");
  }
  const parts = maps.map((m) => `${m.name} ${kib(m.end - m.start)}`).join(" + ");
  for (let i = 1; i < maps.length; i++) {
    if (maps[i - 1].end !== maps[i].start) {
      return no(`${parts}, with a gap between ${maps[i - 1].name} and ${maps[i].name}`);
    }
  }
  const total = maps[maps.length - 1].end - maps[0].start;
  return yes(`${parts}, contiguous: one ${kib(total)} block`);
}

// Bit numbers of UFFD_FEATURE_*, in the kernel's order.
const UFFD_FEATURES = [
  "wp",
  "event-fork",
  "event-remap",
  "event-remove",
  "missing-hugetlbfs",
  "missing-shmem",
  "event-unmap",
  "sigbus",
  "thread-id",
  "minor-hugetlbfs",
  "minor-shmem",
  "exact-address",
  "wp-hugetlbfs-shmem",
  "wp-unpopulated",
  "poison",
  "wp-async",
  "move",
];

function userfaultfd(): string {
  const { features } = probeUserfaultfd();
  const has = (bit: number) => (features & (1n << BigInt(bit))) !== 0n;
  const names = UFFD_FEATURES.filter((_, i) => has(i));
  const wp = has(0) ? `write-protect yes${has(15) ? " (async too)" : ""}` : "write-protect no";
  return `${wp}; features: ${names.join(" ") || "none"}`;
}

function uffdHint(err: unknown): string | undefined {
  if (!(err instanceof NativeError)) return undefined;
  if (err.errno === ERRNO.ENOSYS) return "the kernel was built without CONFIG_USERFAULTFD";
  if (err.errno === ERRNO.EINVAL) return "UFFD_USER_MODE_ONLY needs kernel 5.11 or later";
  if (err.errno === ERRNO.EPERM) return "blocked by the vm.unprivileged_userfaultfd sysctl";
  return undefined;
}

function pagemapScan(): string {
  const n = probePagemapScan();
  return `found exactly the ${n} present pages of a 4-page test mapping`;
}

function scanHint(err: unknown): string | undefined {
  if (!(err instanceof NativeError)) return undefined;
  if (err.errno === 25 || err.errno === ERRNO.EINVAL) {
    return "the kernel is older than 6.7, which ckpt needs";
  }
  return undefined;
}

// The kernel marks new mappings soft-dirty ("sd" in VmFlags) only when it
// was built with CONFIG_MEM_SOFT_DIRTY; clear_refs accepts "4" either way.
function softDirty(): { ok: boolean; detail: string } {
  const smaps = Deno.readTextFileSync("/proc/self/smaps");
  const flagged = smaps.split("\n").some((l) => l.startsWith("VmFlags:") && / sd\b/.test(l));
  if (flagged) return yes("mappings carry the sd flag");
  return no(
    "this kernel has no soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY is off); " +
      "ckpt does not need it",
  );
}

export async function memoryProbes(): Promise<ProbeResult[]> {
  const mapFilesHint = (err: unknown) =>
    err instanceof Deno.errors.PermissionDenied
      ? "reading map_files needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN"
      : undefined;
  return [
    await probe(MAP_FILES, () => yes(mapFiles()), mapFilesHint),
    await probe(VDSO, vdsoLayout),
    await probe(UFFD, () => yes(userfaultfd()), uffdHint),
    await probe(PAGEMAP_SCAN, () => yes(pagemapScan()), scanHint),
    await probe(SOFT_DIRTY, softDirty),
  ];
}
