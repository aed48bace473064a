// One row per ImageKind: the protobuf schema of its payload and the file name
// it lives under. Everything that walks images (show, validation) is driven
// by this table, so a new kind is one line here — and `satisfies` makes
// forgetting that line a type error.
import type { DescMessage } from "@bufbuild/protobuf";
import {
  CgroupsImageSchema,
  FdTableSchema,
  FilesImageSchema,
  InventorySchema,
  MmImageSchema,
  NamespacesImageSchema,
  PagemapImageSchema,
  TaskCoreSchema,
} from "../gen/ckpt/images_pb.ts";
import {
  CGROUPS,
  coreName,
  fdName,
  FILES,
  INVENTORY,
  mmName,
  NAMESPACES,
  pagemapName,
  pagesName,
} from "./dir.ts";
import { ImageKind } from "./format.ts";

export interface KindInfo {
  /** Payload schema; absent for the pages file and kinds without one yet. */
  schema?: DescMessage;
  /** A fixed file name, or the name for one task. */
  file?: string | ((pid: number) => string);
}

export const KINDS = {
  [ImageKind.Inventory]: { schema: InventorySchema, file: INVENTORY },
  [ImageKind.Files]: { schema: FilesImageSchema, file: FILES },
  [ImageKind.Core]: { schema: TaskCoreSchema, file: coreName },
  [ImageKind.Mm]: { schema: MmImageSchema, file: mmName },
  [ImageKind.Pagemap]: { schema: PagemapImageSchema, file: pagemapName },
  [ImageKind.Pages]: { file: pagesName },
  [ImageKind.FdTable]: { schema: FdTableSchema, file: fdName },
  [ImageKind.UnixSockets]: {},
  [ImageKind.Namespaces]: { schema: NamespacesImageSchema, file: NAMESPACES },
  [ImageKind.Cgroups]: { schema: CgroupsImageSchema, file: CGROUPS },
} satisfies Record<ImageKind, KindInfo>;

const ROWS = Object.entries(KINDS).map(([k, info]) => ({
  kind: Number(k) as ImageKind,
  ...(info as KindInfo),
}));

export function kindInfo(kind: number): KindInfo | undefined {
  return (KINDS as Record<number, KindInfo>)[kind];
}

export interface NamedImage {
  kind: ImageKind;
  /** The task the file belongs to, for per-task images. */
  pid?: number;
  /** Position of the kind in KINDS, for listing images in a stable order. */
  order: number;
}

/** What a file name says it holds, or undefined for a name ckpt never writes. */
export function kindOfName(name: string): NamedImage | undefined {
  const m = /-(\d+)(?:\.(\d+))?\.img$/.exec(name);
  const pid = m ? Number(m[1]) : undefined;
  if (m?.[2] !== undefined && pid !== undefined && pagesName(pid, Number(m[2])) === name) {
    const order = ROWS.findIndex((r) => r.kind === ImageKind.Pages);
    return { kind: ImageKind.Pages, pid, order };
  }
  for (const [order, row] of ROWS.entries()) {
    if (typeof row.file === "string" && row.file === name) return { kind: row.kind, order };
    if (typeof row.file === "function" && pid !== undefined && row.file(pid) === name) {
      return { kind: row.kind, pid, order };
    }
  }
  return undefined;
}
