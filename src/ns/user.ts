// User namespaces: uid and gid maps (and whether setgroups is allowed),
// written for the restored root's new namespace before it does anything
// else; and translating the ids ckpt saw (its own namespace's) into the
// ones the restored tasks set from inside theirs.
import { create } from "@bufbuild/protobuf";
import {
  type IdMapRange,
  IdMapRangeSchema,
  type UserNamespace,
  UserNamespaceSchema,
} from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";

function readMap(path: string): IdMapRange[] {
  return Deno.readTextFileSync(path).split("\n").map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length === 3).map(([inside, outside, count]) =>
      create(IdMapRangeSchema, {
        inside: Number(inside),
        outside: Number(outside),
        count: Number(count),
      })
    );
}

export function dumpUser(pid: number): UserNamespace {
  let deny = false;
  try {
    deny = Deno.readTextFileSync(`/proc/${pid}/setgroups`).trim() === "deny";
  } catch { /* older kernels: always allowed */ }
  return create(UserNamespaceSchema, {
    uidMap: readMap(`/proc/${pid}/uid_map`),
    gidMap: readMap(`/proc/${pid}/gid_map`),
    setgroupsDeny: deny,
  });
}

const mapText = (m: IdMapRange[]) => m.map((r) => `${r.inside} ${r.outside} ${r.count}\n`).join("");

/** Writes the maps of the user namespace pid was made in (setgroups first:
 * the kernel takes it only before the gid map). */
export function restoreUser(pid: number, u: UserNamespace): void {
  const write = (file: string, text: string) => {
    try {
      Deno.writeTextFileSync(`/proc/${pid}/${file}`, text);
    } catch (err) {
      throw new RestoreError(
        `writing the ${file} of the restored root's user namespace failed: ${
          (err as Error).message
        }`,
      );
    }
  };
  if (u.setgroupsDeny) write("setgroups", "deny");
  write("uid_map", mapText(u.uidMap));
  write("gid_map", mapText(u.gidMap));
}

/** An id of ckpt's namespace as the namespace with map `m` sees it; -1 when
 * it has none there. */
export function insideId(m: IdMapRange[], id: number): number {
  for (const r of m) {
    if (id >= r.outside && id < r.outside + r.count) return r.inside + (id - r.outside);
  }
  return -1;
}

export function validateUser(u: UserNamespace, fail: (why: string) => never): void {
  for (const m of [u.uidMap, u.gidMap]) {
    if (m.length === 0 || m.length > 340) fail("user namespace map is empty or too long");
    for (const r of m) {
      if (r.count === 0 || r.inside + r.count > 2 ** 32 || r.outside + r.count > 2 ** 32) {
        fail("user namespace map range is malformed");
      }
    }
  }
}
