// Bounds and shape of namespaces.img, checked before anything is restored.
import type { NamespacesImage } from "../gen/ckpt/images_pb.ts";
import { validateUts } from "./uts.ts";
import { validateIpc } from "./ipc.ts";
import { validateUser } from "./user.ts";
import { validateCgroup } from "./cgroup.ts";
import { validateNet } from "./net/validate.ts";

export function validateNamespaces(img: NamespacesImage, fail: (why: string) => never): void {
  if (img.uts) validateUts(img.uts, fail);
  if (img.ipc) validateIpc(img.ipc, fail);
  if (img.user) validateUser(img.user, fail);
  if (img.cgroup) validateCgroup(img.cgroup, fail);
  if (img.net) validateNet(img.net, fail);
  if (img.time && !img.clocks) fail("a time namespace without the tree's clocks");
  if (img.clocks && (img.clocks.monotonicNs < 0n || img.clocks.boottimeNs < 0n)) {
    fail("the tree's clocks are negative");
  }
}
