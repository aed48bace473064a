// The options that say what of a network namespace is the caller's, in
// CRIU's spellings: --external veth[IN]:OUT[@BRIDGE] (dump and restore),
// --veth-pair IN=OUT[@BRIDGE] (restore, CRIU's older form), --empty-ns net,
// --join-ns net:PATH|PID.
import { UsageError } from "../../errors.ts";

export interface VethExternal {
  /** Name of the outside end (undefined: as at dump). */
  outside?: string;
  bridge?: string;
}

const IFNAME = /^[^\s/:@=\[\]]{1,15}$/;

function checkName(n: string, spelled: string): string {
  if (!IFNAME.test(n)) throw new UsageError(`${spelled}: '${n}' is not an interface name`);
  return n;
}

function outsidePart(rest: string, spelled: string): VethExternal {
  if (!rest) return {};
  const [out, bridge] = rest.split("@", 2);
  return {
    outside: out ? checkName(out, spelled) : undefined,
    bridge: bridge !== undefined ? checkName(bridge, spelled) : undefined,
  };
}

/** The veth[…] entries of --external values, by inside name (others are
 * left to their own kinds). */
export function parseVethExternals(values: string[]): Map<string, VethExternal> {
  const out = new Map<string, VethExternal>();
  for (const v of values) {
    if (!v.startsWith("veth[")) continue;
    const m = /^veth\[([^\]]*)\](?::(.*))?$/.exec(v);
    if (!m) {
      throw new UsageError(
        `--external ${v}: expected veth[IFNAME] or veth[IFNAME]:OUTSIDE[@BRIDGE]`,
      );
    }
    out.set(checkName(m[1], `--external ${v}`), outsidePart(m[2] ?? "", `--external ${v}`));
  }
  return out;
}

/** --veth-pair IN=OUT[@BRIDGE] values. */
export function parseVethPairs(values: string[]): Map<string, VethExternal> {
  const out = new Map<string, VethExternal>();
  for (const v of values) {
    const i = v.indexOf("=");
    if (i <= 0) throw new UsageError(`--veth-pair ${v}: expected IN=OUT[@BRIDGE]`);
    const p = outsidePart(v.slice(i + 1), `--veth-pair ${v}`);
    if (!p.outside) throw new UsageError(`--veth-pair ${v}: the outside name is missing`);
    out.set(checkName(v.slice(0, i), `--veth-pair ${v}`), p);
  }
  return out;
}

/** --empty-ns values (CRIU takes only net). */
export function parseEmptyNs(values: string[]): { net: boolean } {
  for (const v of values) {
    for (const k of v.split(",")) {
      if (k !== "net") {
        throw new UsageError(`--empty-ns ${v}: only 'net' can be left empty (as in CRIU)`);
      }
    }
  }
  return { net: values.length > 0 };
}

/** --join-ns NS:PID|PATH values; only network namespaces so far. */
export function parseJoinNs(values: string[]): { net?: string } {
  const out: { net?: string } = {};
  for (const v of values) {
    const m = /^([a-z]+):(.+)$/.exec(v);
    if (!m) {
      throw new UsageError(`--join-ns ${v}: expected NS:PID or NS:PATH, e.g. net:/run/netns/x`);
    }
    if (m[1] !== "net") {
      throw new UsageError(`--join-ns ${v}: only network namespaces can be joined yet`);
    }
    if (m[2].includes(",")) {
      throw new UsageError(
        `--join-ns ${v}: CRIU's extra options (after ',') are for user namespaces`,
      );
    }
    out.net = /^\d+$/.test(m[2]) ? `/proc/${m[2]}/ns/net` : m[2];
  }
  return out;
}
