// Builds a small but real images directory through ImageDir, the same code
// path dump uses: an inventory, a core, a pagemap and a pages file.
import { create } from "@bufbuild/protobuf";
import {
  InventorySchema,
  PagemapImageSchema,
  TaskCoreSchema,
  ThreadCoreSchema,
} from "../../src/gen/ckpt/images_pb.ts";
import { crc32c } from "../../src/images/crc32c.ts";
import { coreName, ImageDir, INVENTORY, pagemapName, pagesName } from "../../src/images/dir.ts";
import { FORMAT_VERSION, ImageKind, PAGE_SIZE, pagesHeader } from "../../src/images/format.ts";

export const PID = 4242;
export const NR_PAGES = 3;

export function buildImages(path: string): ImageDir {
  const dir = ImageDir.create(path);
  const pages = new Uint8Array(NR_PAGES * PAGE_SIZE);
  for (let i = 0; i < pages.length; i++) pages[i] = (i * 7) & 0xff;
  const pagesFile = new Uint8Array(PAGE_SIZE + pages.length);
  pagesFile.set(pagesHeader());
  pagesFile.set(pages, PAGE_SIZE);
  dir.writeRaw(pagesName(PID), pagesFile);

  dir.write(
    pagemapName(PID),
    ImageKind.Pagemap,
    PagemapImageSchema,
    create(PagemapImageSchema, {
      pid: PID,
      pagesFile: pagesName(PID),
      runs: [
        {
          vaddr: 0x7f0000000000n,
          nrPages: 2n,
          fileOffset: BigInt(PAGE_SIZE),
          crc32c: crc32c(pages.subarray(0, 2 * PAGE_SIZE)),
        },
        {
          vaddr: 0x7f0000010000n,
          nrPages: 1n,
          fileOffset: BigInt(3 * PAGE_SIZE),
          crc32c: crc32c(pages.subarray(2 * PAGE_SIZE)),
        },
      ],
    }),
  );

  const regs = new Uint8Array(27 * 8);
  new DataView(regs.buffer).setBigUint64(16 * 8, 0x401000n, true); // rip
  dir.write(
    coreName(PID),
    ImageKind.Core,
    TaskCoreSchema,
    create(TaskCoreSchema, {
      pid: PID,
      ppid: 1,
      comm: "counter",
      exe: "/usr/bin/counter",
      threads: [
        create(ThreadCoreSchema, {
          tid: PID,
          regs,
          xsave: new Uint8Array(2696).fill(0xaa),
          comm: "counter",
          sigmask: 0x10000n,
        }),
      ],
    }),
  );

  const files = [coreName(PID), pagemapName(PID), pagesName(PID)].map((name) => ({
    name,
    size: BigInt(Deno.statSync(dir.file(name)).size),
    crc32c: 0,
  }));
  dir.write(
    INVENTORY,
    ImageKind.Inventory,
    InventorySchema,
    create(InventorySchema, {
      formatVersion: FORMAT_VERSION,
      ckptVersion: "test",
      rootPid: PID,
      pids: [PID],
      pageSize: PAGE_SIZE,
      files,
    }),
  );
  return dir;
}
