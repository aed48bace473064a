// An image directory: reads and writes framed protobuf images, owner-only.
// Writes go to a temporary name and are renamed into place, and the
// inventory is written last, so an interrupted dump never looks complete.
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { decodeMessage, encodeMessage } from "./codec.ts";
import { ImageError } from "../errors.ts";
import {
  type CgroupsImage,
  CgroupsImageSchema,
  type FdTable,
  FdTableSchema,
  type FilesImage,
  FilesImageSchema,
  type Inventory,
  InventorySchema,
  type MmImage,
  MmImageSchema,
  type NamespacesImage,
  NamespacesImageSchema,
  type PagemapImage,
  PagemapImageSchema,
  type TaskCore,
  TaskCoreSchema,
} from "../gen/ckpt/images_pb.ts";
import { decodeImage, encodeImage, ImageKind } from "./format.ts";

export const INVENTORY = "inventory.img";
export const FILES = "files.img";
export const NAMESPACES = "namespaces.img";
export const CGROUPS = "cgroups.img";
export const coreName = (pid: number) => `core-${pid}.img`;
export const mmName = (pid: number) => `mm-${pid}.img`;
export const pagemapName = (pid: number) => `pagemap-${pid}.img`;
/** Part 0 is pages-PID.img; a dump copied by k threads adds pages-PID.1.img … */
export const pagesName = (pid: number, part = 0) =>
  part ? `pages-${pid}.${part}.img` : `pages-${pid}.img`;
export const fdName = (pid: number) => `fdinfo-${pid}.img`;

export class ImageDir {
  private constructor(readonly path: string) {}

  /** Creates (0700) or reuses a directory without images for a new dump.
   * One that exists is left as it is (its mode is its owner's business: -D
   * /tmp must not make /tmp private); the files in it are 0600 anyway. */
  static create(path: string): ImageDir {
    try {
      Deno.mkdirSync(path, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new ImageError(path, `cannot create the images directory: ${(err as Error).message}`);
    }
    for (const e of Deno.readDirSync(path)) {
      if (e.name.endsWith(".img") || e.name.endsWith(".img.tmp")) {
        throw new ImageError(
          path,
          `already holds images (${e.name}); give an empty or new directory`,
        );
      }
    }
    return new ImageDir(path);
  }

  static open(path: string): ImageDir {
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(path);
    } catch {
      throw new ImageError(path, "no such images directory");
    }
    if (!st.isDirectory) throw new ImageError(path, "not a directory");
    return new ImageDir(path);
  }

  file(name: string): string {
    return `${this.path}/${name}`;
  }

  exists(name: string): boolean {
    try {
      Deno.statSync(this.file(name));
      return true;
    } catch {
      return false;
    }
  }

  writeRaw(name: string, data: Uint8Array): void {
    const tmp = this.file(`${name}.tmp`);
    Deno.writeFileSync(tmp, data, { mode: 0o600 });
    Deno.chmodSync(tmp, 0o600);
    Deno.renameSync(tmp, this.file(name));
  }

  write<D extends DescMessage>(
    name: string,
    kind: ImageKind,
    schema: D,
    msg: MessageShape<D>,
  ): void {
    this.writeRaw(name, encodeImage(kind, encodeMessage(schema, msg)));
  }

  read<D extends DescMessage>(name: string, kind: ImageKind, schema: D): MessageShape<D> {
    const path = this.file(name);
    let data: Uint8Array;
    try {
      data = Deno.readFileSync(path);
    } catch {
      throw new ImageError(path, "missing: the image directory is incomplete");
    }
    const { payload } = decodeImage(path, data, kind);
    try {
      return decodeMessage(schema, payload);
    } catch (err) {
      throw new ImageError(path, `undecodable payload: ${(err as Error).message}`);
    }
  }

  readInventory(): Inventory {
    if (!this.exists(INVENTORY)) {
      throw new ImageError(
        this.path,
        `no ${INVENTORY}: not an images directory, or the dump did not complete`,
      );
    }
    return this.read(INVENTORY, ImageKind.Inventory, InventorySchema);
  }
  readCore(pid: number): TaskCore {
    return this.read(coreName(pid), ImageKind.Core, TaskCoreSchema);
  }
  readMm(pid: number): MmImage {
    return this.read(mmName(pid), ImageKind.Mm, MmImageSchema);
  }
  readPagemap(pid: number): PagemapImage {
    return this.read(pagemapName(pid), ImageKind.Pagemap, PagemapImageSchema);
  }
  readFiles(): FilesImage {
    return this.read(FILES, ImageKind.Files, FilesImageSchema);
  }
  /** namespaces.img, absent from dumps made before it existed. */
  readNamespaces(): NamespacesImage | undefined {
    if (!this.exists(NAMESPACES)) return undefined;
    return this.read(NAMESPACES, ImageKind.Namespaces, NamespacesImageSchema);
  }
  /** cgroups.img, absent from dumps that recorded no cgroups. */
  readCgroups(): CgroupsImage | undefined {
    if (!this.exists(CGROUPS)) return undefined;
    return this.read(CGROUPS, ImageKind.Cgroups, CgroupsImageSchema);
  }
  readFdTable(pid: number): FdTable {
    return this.read(fdName(pid), ImageKind.FdTable, FdTableSchema);
  }
}
