// ckpt pre-dump: the tree's memory saved while it keeps running, so the dump
// that follows (--prev-images-dir) only saves what was written since and is
// frozen for that much less. Frozen only to start (or continue) write
// tracking and fork copy-on-write copies; pages are read from the copies.
import { create } from "@bufbuild/protobuf";
import { PagemapImageSchema, type PageRun } from "../gen/ckpt/images_pb.ts";
import { DumpError } from "../errors.ts";
import { coverage, parentPath } from "../images/chain.ts";
import { ImageDir, pagemapName, pagesName } from "../images/dir.ts";
import { ImageKind, PAGE_SIZE } from "../images/format.ts";
import { parsePreDump } from "../images/verify.ts";
import { NoProcess, processExists } from "../proc/read.ts";
import { log } from "../util/log.ts";
import { formatBytes, formatMs } from "../util/units.ts";
import { checkScope, dumpWorkers, failureOf } from "./dump.ts";
import { DumpOutput } from "./output.ts";
import { FileCollector } from "../files/collect.ts";
import { freezeTree, Frozen } from "./freeze.ts";
import { type CgroupFreezer, freezeThrough } from "../cgroup/freezer.ts";
import { capRuns, collectVmas, planPages, type SharedClaims } from "./memory.ts";
import { Snapshots } from "./snapshot.ts";
import { MemoryTracker } from "./tracking.ts";
import { readInPlace } from "../task/vma_flags.ts";
import { notifier, type Notify } from "../util/actions.ts";
import { type DumpStats, us, writeDumpStats } from "../images/criu_stats.ts";
import { countPages, noPages } from "./stats.ts";

export interface PreDumpOptions {
  pid: number;
  dir: string;
  /** An earlier pre-dump (relative to dir unless absolute): only pages
   * written since it are saved again. */
  prevImagesDir?: string;
  shellJob?: boolean;
  /** CRIU's action-script moments: pre-dump, before the tree is frozen. */
  notify?: Notify;
  /** --freeze-cgroup, as for dump. */
  freezeCgroup?: string;
}

export interface PreDumpResult {
  pid: number;
  dir: string;
  pagesBytes: number;
  /** Pages the parent pre-dump already holds. */
  parentBytes: number;
  frozenMs: number;
  totalMs: number;
  /** CRIU's dump statistics (a pre-dump writes stats-dump too). */
  stats: DumpStats;
}

export async function preDump(opts: PreDumpOptions): Promise<PreDumpResult> {
  const t0 = performance.now();
  const { pid } = opts;
  if (pid === Deno.pid) throw new DumpError("ckpt cannot dump itself");
  if (!processExists(pid)) throw new NoProcess(pid);
  checkScope(pid, !!opts.shellJob);
  const prev = opts.prevImagesDir
    ? parsePreDump(parentPath(opts.dir, opts.prevImagesDir))
    : undefined;
  const out = new DumpOutput(ImageDir.create(opts.dir));
  const frozen = new Frozen();
  const snapshots = new Snapshots();
  const tracker = new MemoryTracker();
  let released = false;
  const notify = notifier(opts.notify, (m) => new DumpError(m));
  const pages = noPages();
  let memdumpMs = 0;
  let freezer: CgroupFreezer | undefined;
  try {
    notify("pre-dump");
    const tFreeze = performance.now();
    if (opts.freezeCgroup) freezer = freezeThrough(opts.freezeCgroup, pid, frozen);
    const all = freezeTree(pid, frozen);
    if (freezer) frozen.releaseExcept(new Set(all.flatMap((t) => t.tids)));
    const tree = all.filter((t) => !t.zombie);
    const tFrozen = performance.now();
    const claims: SharedClaims = new Map();
    // Mappings only: their files are not saved by a pre-dump.
    const files = new FileCollector({ shellJob: true, mappingsOnly: true });
    const plans: { pid: number; runs: PageRun[] }[] = [];
    const kept = new Set<number>();
    for (const { pid: p } of tree) {
      if (tracker.adopt(p, prev?.pagemaps.get(p)?.tracking)) kept.add(p);
    }
    // Tracking not taken over (an earlier pre-dump's) goes before new starts.
    tracker.closeInTasks(tree.map((t) => t.pid), true);
    for (const { pid: p } of tree) {
      const vmas = collectVmas(p, files);
      const pm = prev?.pagemaps.get(p);
      if (!kept.has(p)) tracker.start(p);
      // Memory a fork copy lacks or sees wiped is left to the dump, which
      // then finds no parent pages there and saves it whole.
      const copied = vmas.filter((v) => !readInPlace(v));
      const tPlan = performance.now();
      const runs = capRuns(planPages(p, copied, claims, kept.has(p) ? coverage(pm!) : undefined));
      memdumpMs += performance.now() - tPlan;
      countPages(pages, copied, runs);
      plans.push({ pid: p, runs });
      tracker.protect(p, vmas);
    }
    for (const { pid: p } of plans) snapshots.take(p);
    const frozenMs = performance.now() - tFrozen;
    released = true;
    frozen.release();
    freezer?.restoreState();

    let pagesBytes = 0, parentPages = 0n;
    const pagemaps = plans.map(({ pid: p, runs }) => {
      const pm = create(PagemapImageSchema, {
        pid: p,
        pagesFile: pagesName(p),
        runs,
        runsCrc32c: true,
        tracking: tracker.record(p),
      });
      parentPages += runs.filter((r) => r.inParent).reduce((a, r) => a + r.nrPages, 0n);
      return pm;
    });
    const tWrite = performance.now();
    const saved = await out.pages(
      pagemaps.map((pm) => ({ pid: pm.pid, runs: pm.runs, source: snapshots.source(pm.pid) })),
      dumpWorkers(),
    );
    const memwriteMs = performance.now() - tWrite;
    pagemaps.forEach((pm, i) => {
      pm.parts = saved[i].parts;
      pagesBytes += saved[i].bytes;
      out.write(pagemapName(pm.pid), ImageKind.Pagemap, PagemapImageSchema, pm);
    });
    snapshots.dispose();
    tracker.dispose();
    out.inventory({
      rootPid: pid,
      pids: plans.map((p) => p.pid),
      shellJob: !!opts.shellJob,
      preDump: true,
      parent: opts.prevImagesDir,
    });
    const parentBytes = Number(parentPages) * PAGE_SIZE;
    const totalMs = performance.now() - t0;
    log.info(
      `pre-dumped pid ${pid} to ${opts.dir}: ${formatBytes(pagesBytes)}` +
        (prev
          ? ` written since ${opts.prevImagesDir}, ${formatBytes(parentBytes)} unchanged`
          : "") +
        ` in ${formatMs(totalMs)} (frozen ${formatMs(frozenMs)})`,
    );
    const stats: DumpStats = {
      freezing_time: us(tFrozen - tFreeze),
      frozen_time: us(frozenMs),
      memdump_time: us(memdumpMs),
      memwrite_time: us(memwriteMs),
      ...pages,
      pages_lazy: 0,
    };
    writeDumpStats(opts.dir, stats);
    return { pid, dir: opts.dir, pagesBytes, parentBytes, frozenMs, totalMs, stats };
  } catch (err) {
    tracker.abandon((p) => !released && frozen.has(p));
    tracker.dispose();
    snapshots.dispose();
    frozen.release();
    freezer?.restoreState();
    out.removeAll();
    throw failureOf(err, pid, "pre-dump");
  } finally {
    freezer?.close();
  }
}
