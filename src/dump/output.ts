// What dump and pre-dump write into an images directory: images remembered
// in the order written, the pages of several tasks side by side, the
// inventory last (its presence means the directory is complete), and, after
// a failure, everything removed again.
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { ImageFileSchema, InventorySchema, type PageRun } from "../gen/ckpt/images_pb.ts";
import { crc32cOf as crc32c } from "../native/integrity.ts";
import { type ImageDir, INVENTORY, pagesName } from "../images/dir.ts";
import { FORMAT_VERSION, ImageKind, PAGE_SIZE } from "../images/format.ts";
import { log } from "../util/log.ts";
import { inParallel } from "../util/pool.ts";
import { formatMs } from "../util/units.ts";
import { VERSION } from "../version.ts";
import { pageParts, writePages } from "./memory.ts";
import { bootId } from "../files/authority.ts";

/** One task's pages to write: its runs, read from `source` (the task or its
 * frozen copy). */
export interface TaskPages {
  pid: number;
  runs: PageRun[];
  source: number;
}

/** What the inventory says beyond the files and this ckpt and kernel. */
export interface InventoryFields {
  rootPid: number;
  pids: number[];
  shellJob?: boolean;
  extUnixSk?: boolean;
  preDump?: boolean;
  /** --prev-images-dir, as given. */
  parent?: string;
}

export class DumpOutput {
  private readonly written: string[] = [];

  constructor(readonly dir: ImageDir) {}

  /** One image; named before it is written, so a failure removes its
   * temporary too. */
  write<D extends DescMessage>(name: string, kind: ImageKind, schema: D, msg: MessageShape<D>) {
    this.written.push(name);
    this.dir.write(name, kind, schema, msg);
  }

  /** The pages of every task, tasks side by side on at most `slots`
   * threads (a large task takes several, one per pages file). Returns, per
   * task, the bytes written and its number of pages files. */
  async pages(tasks: TaskPages[], slots: number): Promise<{ bytes: number; parts: number }[]> {
    const parts = tasks.map((t) => pageParts(t.runs, slots));
    tasks.forEach((t, i) => {
      for (let part = 0; part < parts[i]; part++) this.written.push(pagesName(t.pid, part));
    });
    const bytes = await inParallel(
      tasks.map((t, i) => ({
        weight: parts[i],
        run: async () => {
          const t0 = performance.now();
          const n = await writePages(
            t.source,
            t.runs,
            parts[i],
            (part) => this.dir.file(pagesName(t.pid, part)),
          );
          log.debug(`pid ${t.pid}: pages written in ${formatMs(performance.now() - t0)}`);
          return n;
        },
      })),
      slots,
    );
    return bytes.map((b, i) => ({ bytes: b, parts: parts[i] }));
  }

  /** The inventory, listing every file written with its size and (but for
   * pages files, checked run by run) its CRC32C. Written last. */
  inventory(fields: InventoryFields): void {
    const files = this.written.map((name) => {
      const data = name.startsWith("pages-") ? undefined : Deno.readFileSync(this.dir.file(name));
      return create(ImageFileSchema, {
        name,
        size: BigInt(data ? data.length : Deno.statSync(this.dir.file(name)).size),
        crc32c: data ? crc32c(data) : 0,
      });
    });
    this.write(
      INVENTORY,
      ImageKind.Inventory,
      InventorySchema,
      create(InventorySchema, {
        formatVersion: FORMAT_VERSION,
        ckptVersion: VERSION,
        kernel: Deno.osRelease(),
        createdUnixMs: BigInt(Date.now()),
        pageSize: PAGE_SIZE,
        rootPid: fields.rootPid,
        pids: fields.pids,
        shellJob: !!fields.shellJob,
        extUnixSk: !!fields.extUnixSk,
        preDump: !!fields.preDump,
        parent: fields.parent ?? "",
        bootId: bootId(),
        files,
      }),
    );
  }

  /** After a failure: every file written, and each one's temporary. */
  removeAll(): void {
    for (const name of this.written) {
      for (const f of [name, `${name}.tmp`]) {
        try {
          Deno.removeSync(this.dir.file(f));
        } catch { /* not written yet */ }
      }
    }
  }
}
