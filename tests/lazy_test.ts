// restore --lazy-pages: the tree runs before its anonymous memory is in, and
// every page still arrives — through faults or the background copy — as the
// restored program's own checksum of its memory shows.
import { assert, assertEquals, assertMatch } from "../src/deps/std_assert.ts";
import { PagemapImageSchema, type PageRun, VmaKind } from "../src/gen/ckpt/images_pb.ts";
import { crc32c, crc32cCombine } from "../src/images/crc32c.ts";
import { ImageDir, INVENTORY, pagemapName, pagesName } from "../src/images/dir.ts";
import { ImageKind } from "../src/images/format.ts";
import { InventorySchema } from "../src/gen/ckpt/images_pb.ts";
import { runCkpt, spawnCkpt } from "./helpers/ckpt.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  startSession,
  tempDir,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";

function reports(log: string) {
  return [...log.matchAll(/report pid=(\d+) tick=(\d+) sum=(\w+) want=(\w+)/g)]
    .map((m) => ({ pid: +m[1], tick: +m[2], sum: m[3], want: m[4] }));
}

/** Restored and let go: its own name (set by the restorer), no tracer. */
function running(pid: number): boolean {
  const st = readText(`/proc/${pid}/status`);
  return /^Name:\s+counter$/m.test(st) && /^TracerPid:\s+0$/m.test(st);
}

/** A counter of `mib` MiB, reported once, dumped (killed). */
async function dumpedCounter(dir: string, mib: number) {
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/counter`, dir, String(mib)]);
  await until("workload start", () => readText(log).includes("start"));
  Deno.kill(p.pid, "SIGUSR1");
  await until("first report", () => reports(readText(log)).length === 1);
  const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
  assertEquals(r.code, 0, `dump failed: ${r.stderr}`);
  await p.status;
  await until(`pid ${p.pid} free`, () => gone(p.pid));
  return { pid: p.pid, log, before: reports(readText(log))[0] };
}

Deno.test("restore --lazy-pages -d: runs first, returns once every page is in", async () => {
  const dir = await tempDir("lazy");
  let pid = 0;
  try {
    const d = await dumpedCounter(dir, 64);
    pid = d.pid;
    const r = await runCkpt(["restore", "-D", `${dir}/images`, "-d", "--lazy-pages", "--json"]);
    assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
    const out = JSON.parse(r.stdout);
    assertEquals(out.pid, pid);
    assert(
      out.firstInstructionMs > 0 && out.firstInstructionMs < out.ms,
      `running after ${out.firstInstructionMs} ms, all pages after ${out.ms} ms`,
    );
    assert(alive(pid));
    Deno.kill(pid, "SIGUSR1");
    await until("report after restore", () => reports(readText(d.log)).length === 2);
    const after = reports(readText(d.log))[1];
    assertEquals(after.sum, after.want, "memory checksum matches: every page arrived");
    assertEquals(after.sum, d.before.sum);
    assert(after.tick > d.before.tick, "the loop carries on");
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restore --lazy-pages without -d: pages served while ckpt stays the parent", async () => {
  const dir = await tempDir("lazy-parent");
  let pid = 0;
  try {
    const d = await dumpedCounter(dir, 64);
    pid = d.pid;
    const ckpt = spawnCkpt(["restore", "-D", `${dir}/images`, "--lazy-pages"]);
    // Let go by ckpt: no longer traced.
    await until(
      "restored",
      () => running(pid),
    );
    // The report reads all 64 MiB, most of it likely still being copied.
    Deno.kill(pid, "SIGUSR1");
    await until("report after restore", () => reports(readText(d.log)).length === 2);
    const after = reports(readText(d.log))[1];
    assertEquals(after.sum, after.want, "memory checksum matches: every page arrived");
    assertEquals(after.sum, d.before.sum);
    ckpt.kill("SIGTERM"); // forwarded to the restored task
    const st = await ckpt.output();
    assertEquals(st.code, 128 + 15, new TextDecoder().decode(st.stderr));
    await until("task gone", () => !alive(pid));
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restore --lazy-pages: a page that cannot be served kills the tree with one line", async () => {
  const dir = await tempDir("lazy-fail");
  let pid = 0;
  try {
    const d = await dumpedCounter(dir, 256);
    pid = d.pid;
    const ckpt = spawnCkpt(["restore", "-D", `${dir}/images`, "--lazy-pages"]);
    // As soon as the tree runs, while most of its 256 MiB is still to come,
    // the pages file loses everything but its header page.
    const end = Date.now() + 20_000;
    while (!(running(pid))) {
      if (Date.now() > end) throw new Error("timed out waiting for the restored tree");
    }
    Deno.truncateSync(`${dir}/images/pages-${pid}.img`, 4096);
    const st = await ckpt.output();
    const err = new TextDecoder().decode(st.stderr).trim();
    assertEquals(st.code, 1, err);
    assertEquals(err.split("\n").length, 1, err);
    assertMatch(
      err,
      new RegExp(
        `^ckpt: lazy restore of pid ${pid} failed, the tree was killed: pages-${pid}.img can no longer be read`,
      ),
    );
    await until("tree gone", () => !alive(pid));
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

/** The runs of the counter's patterned memory (its largest anonymous
 * private mapping), which a lazy restore serves. */
function servedRuns(images: string, pid: number): PageRun[] {
  const dir = ImageDir.open(images);
  const big = dir.readMm(pid).vmas.filter((v) => v.kind === VmaKind.VMA_ANON_PRIVATE)
    .sort((a, b) => Number((b.end - b.start) - (a.end - a.start)))[0];
  return dir.readPagemap(pid).runs.filter((r) => r.vaddr >= big.start && r.vaddr < big.end);
}

function flipByte(path: string, off: bigint): () => void {
  const f = Deno.openSync(path, { read: true, write: true });
  try {
    const b = new Uint8Array(1);
    f.seekSync(Number(off), Deno.SeekMode.Start);
    f.readSync(b);
    f.seekSync(Number(off), Deno.SeekMode.Start);
    f.writeSync(new Uint8Array([b[0] ^ 0xff]));
  } finally {
    f.close();
  }
  return () => flipByte(path, off);
}

function damagedRun(pid: number, r: PageRun): RegExp {
  return new RegExp(
    `^ckpt: lazy restore of pid ${pid} failed, the tree was killed: ` +
      `${pagesName(pid, r.part).replaceAll(".", "\\.")}: ` +
      `checksum mismatch in the run at offset 0x${r.fileOffset.toString(16)} \\(vaddr ` +
      `0x${r.vaddr.toString(16)}, ${r.nrPages} pages\\): the image is damaged$`,
  );
}

Deno.test("restore --lazy-pages checks a run when first serving it, the other images before", async () => {
  const dir = await tempDir("lazy-crc");
  let pid = 0;
  try {
    const d = await dumpedCounter(dir, 256);
    pid = d.pid;
    const images = `${dir}/images`;
    const runs = servedRuns(images, pid);
    // Capped at dump, so a fault never waits for a long check.
    assert(runs.length >= 128, `${runs.length} runs`);
    assert(runs.every((r) => r.nrPages <= 512n), "a run longer than 2 MiB");
    // Every other image is still checked before anything is forked.
    const undo = flipByte(`${images}/core-${pid}.img`, 30n);
    let r = await runCkpt(["restore", "-D", images, "-d", "--lazy-pages"]);
    assertEquals(r.code, 1, r.stderr);
    assertMatch(r.stderr.trim(), new RegExp(`^ckpt: \\S+/core-${pid}\\.img: checksum mismatch`));
    assert(!alive(pid), "a task ran despite a damaged core image");
    undo();
    // A damaged page near the end of the memory: the tree runs first, then
    // the page server reaches that run and kills it.
    const last = runs.at(-1)!;
    flipByte(`${images}/${pagesName(pid, last.part)}`, last.fileOffset + 7n * 4096n + 100n);
    r = await runCkpt(["restore", "-D", images, "-d", "--lazy-pages"]);
    const err = r.stderr.trim();
    assertEquals(r.code, 1, err);
    assertEquals(err.split("\n").length, 1, err);
    assertMatch(err, damagedRun(pid, last));
    await until("tree gone", () => !alive(pid));
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

/** Rewrites the pagemap the way ckpt wrote it before runs were capped: each
 * run as long as the memory allows, with its CRC32C joined from the pieces. */
function uncapRuns(images: string, pid: number): void {
  const dir = ImageDir.open(images);
  const pm = dir.readPagemap(pid);
  const vmas = dir.readMm(pid).vmas;
  const vmaOf = (a: bigint) => vmas.findIndex((v) => v.start <= a && a < v.end);
  const out: PageRun[] = [];
  for (const r of pm.runs) {
    const last = out.at(-1);
    if (
      last && last.vaddr + last.nrPages * 4096n === r.vaddr && last.part === r.part &&
      last.fileOffset + last.nrPages * 4096n === r.fileOffset &&
      vmaOf(last.vaddr) === vmaOf(r.vaddr)
    ) {
      last.crc32c = crc32cCombine(last.crc32c, r.crc32c, r.nrPages * 4096n);
      last.nrPages += r.nrPages;
    } else out.push({ ...r });
  }
  pm.runs = out;
  dir.write(pagemapName(pid), ImageKind.Pagemap, PagemapImageSchema, pm);
  const inv = dir.readInventory();
  const data = Deno.readFileSync(dir.file(pagemapName(pid)));
  const entry = inv.files.find((f) => f.name === pagemapName(pid))!;
  entry.size = BigInt(data.length);
  entry.crc32c = crc32c(data);
  dir.write(INVENTORY, ImageKind.Inventory, InventorySchema, inv);
}

Deno.test("restore --lazy-pages of images with long runs checks each whole run at first touch", async () => {
  const dir = await tempDir("lazy-long");
  let pid = 0;
  try {
    const d = await dumpedCounter(dir, 256);
    pid = d.pid;
    const images = `${dir}/images`;
    uncapRuns(images, pid);
    const runs = servedRuns(images, pid);
    const long = runs.toSorted((a, b) => Number(b.nrPages - a.nrPages))[0];
    assert(long.nrPages >= 16384n, `longest run ${long.nrPages} pages`);
    let r = await runCkpt(["restore", "-D", images, "-d", "--lazy-pages"]);
    assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
    Deno.kill(pid, "SIGUSR1");
    await until("report after restore", () => reports(readText(d.log)).length === 2);
    const after = reports(readText(d.log))[1];
    assertEquals(after.sum, after.want, "memory checksum matches: every page arrived");
    assertEquals(after.sum, d.before.sum);
    await killAndForget(pid);
    // One byte near its end fails the whole run, named as the image has it.
    flipByte(
      `${images}/${pagesName(pid, long.part)}`,
      long.fileOffset + (long.nrPages - 3n) * 4096n,
    );
    r = await runCkpt(["restore", "-D", images, "-d", "--lazy-pages"]);
    assertEquals(r.code, 1, r.stderr);
    assertMatch(r.stderr.trim(), damagedRun(pid, long));
    await until("tree gone", () => !alive(pid));
  } finally {
    if (pid) await killAndForget(pid);
    await Deno.remove(dir, { recursive: true });
  }
});
