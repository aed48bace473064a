// UTS namespaces: the host and domain names, read and set inside it.
import { create } from "@bufbuild/protobuf";
import { type UtsNamespace, UtsNamespaceSchema } from "../gen/ckpt/images_pb.ts";
import { setdomainname, sethostname, uname } from "../native/ns.ts";
import { inNamespacesOf } from "./enter.ts";

export function dumpUts(pid: number): UtsNamespace {
  return create(UtsNamespaceSchema, inNamespacesOf(pid, ["uts"], uname));
}

/** Sets the names in the UTS namespace of pid (the restored root). */
export function restoreUts(pid: number, uts: UtsNamespace): void {
  inNamespacesOf(pid, ["uts"], () => {
    sethostname(uts.hostname);
    setdomainname(uts.domainname);
  });
}

export function validateUts(uts: UtsNamespace, fail: (why: string) => never): void {
  const enc = new TextEncoder();
  for (const [what, v] of [["hostname", uts.hostname], ["domainname", uts.domainname]]) {
    if (enc.encode(v).length > 64) fail(`the ${what} is longer than 64 bytes`);
  }
}
