// Where the paths of a tree with a mount namespace of its own lead, for
// ckpt's own file system calls. The images hold paths as the tree saw them
// ("/bin/sh" is the container's); ckpt, in its own mount namespace, reaches
// them through the tree's root: at dump /proc/ROOT/root (the frozen root),
// at restore a directory fd of the restored root's root, below which paths
// are resolved as if it were "/" (RESOLVE_IN_ROOT: no ".." or absolute
// symlink leads out). One dump or restore runs at a time in a ckpt process,
// so the view is set for its duration and cleared after.
import { AT_FDCWD, openat2 } from "../native/integrity.ts";

const RESOLVE_IN_ROOT = 0x10;

let dumpRoot: number | undefined;
let treeMounts: Set<number> | undefined;
let restoreRoot: number | undefined;

/** Paths are seen through `root` (the frozen root of a dumped tree with
 * its own mount namespace; undefined: ckpt's own) until the returned
 * function is called. */
export function setDumpRoot(root: number | undefined): () => void {
  const was = dumpRoot, wasMounts = treeMounts;
  dumpRoot = root;
  treeMounts = undefined;
  return () => {
    dumpRoot = was;
    treeMounts = wasMounts;
  };
}

/** The mount ids of the dumped tree's own mount namespace. */
export function setTreeMounts(ids: Iterable<number>): void {
  treeMounts = new Set(ids);
}

/** Whether an fd of the dumped tree (its fdinfo) is on a mount outside the
 * tree's own mount namespace: a file it was given from outside. */
export function onHostMount(info: Map<string, string>, link: string): boolean {
  if (!treeMounts || !link.startsWith("/")) return false;
  const id = Number(info.get("mnt_id") ?? NaN);
  return Number.isInteger(id) && !treeMounts.has(id);
}

/** A path of the dumped tree, as ckpt can reach it. */
export function treePath(path: string): string {
  if (dumpRoot === undefined || !path.startsWith("/")) return path;
  return `/proc/${dumpRoot}/root${path === "/" ? "" : path}`;
}

/** Whether dump paths are seen through a tree's root. */
export function viewingTree(): boolean {
  return dumpRoot !== undefined;
}

/** realpath of an absolute path of the dumped tree, symlinks resolved as
 * the tree sees them (an absolute link is the tree's, not ckpt's). */
export function treeRealPath(path: string): string {
  if (dumpRoot === undefined) return Deno.realPathSync(path);
  const todo = path.split("/").filter(Boolean);
  const done: string[] = [];
  for (let links = 0; todo.length;) {
    const part = todo.shift()!;
    if (part === ".") continue;
    if (part === "..") {
      done.pop();
      continue;
    }
    const here = `/${[...done, part].join("/")}`;
    const st = Deno.lstatSync(treePath(here));
    if (!st.isSymlink) {
      done.push(part);
      continue;
    }
    if (++links > 40) throw new Error(`${path}: too many symlinks`);
    const target = Deno.readLinkSync(treePath(here));
    if (target.startsWith("/")) done.length = 0;
    todo.unshift(...target.split("/").filter(Boolean));
  }
  return `/${done.join("/")}`;
}

/** Runs fn with paths resolved below the directory fd `rootFd` (the
 * restored tree's root). */
export function withRestoreRoot<T>(rootFd: number, fn: () => T): T {
  const was = restoreRoot;
  restoreRoot = rootFd;
  try {
    return fn();
  } finally {
    restoreRoot = was;
  }
}

/** Runs fn with ckpt's own paths (a file the tree had from outside its
 * mounts). */
export function withHostPaths<T>(fn: () => T): T {
  const was = restoreRoot;
  restoreRoot = undefined;
  try {
    return fn();
  } finally {
    restoreRoot = was;
  }
}

/** The restored tree's root fd while its files are opened, if any. */
export function restoreRootFd(): number | undefined {
  return restoreRoot;
}

/** openat2 arguments for an absolute path of the restored tree: relative to
 * its root when there is one, or ckpt's own paths. */
export function resolveAt(path: string, resolve: number): {
  dirfd: number;
  path: string;
  resolve: number;
} {
  if (restoreRoot === undefined || !path.startsWith("/")) {
    return { dirfd: AT_FDCWD, path, resolve };
  }
  const rel = path.replace(/^\/+/, "");
  return { dirfd: restoreRoot, path: rel || ".", resolve: resolve | RESOLVE_IN_ROOT };
}

/** openat2 of an absolute path of the restored tree (mode 0). */
export function openAt(path: string, flags: number, resolve: number): number {
  const at = resolveAt(path, resolve);
  return openat2(at.dirfd, at.path, flags, 0, at.resolve);
}
