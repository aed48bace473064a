// The whole symbol table of libckpt.so, one group per ffi/*.zig file.
import { fdSymbols } from "./fdops.ts";
import { memorySymbols } from "./memory.ts";
import { probeSymbols } from "./probe.ts";
import { ptraceSymbols } from "./ptrace.ts";
import { restoreSymbols } from "./restore.ts";
import { sockdiagSymbols } from "./sockdiag.ts";
import { unixskSymbols } from "./unixsk.ts";
import { trackingSymbols } from "./tracking.ts";
import { notifySymbols } from "./notify.ts";
import { anonfdSymbols } from "./anonfd.ts";
import { fdtableSymbols } from "./fdtable.ts";
import { ttySymbols } from "./tty.ts";
import { credsSymbols } from "./creds.ts";
import { nsSymbols } from "./ns.ts";
import { rtnlSymbols } from "./rtnl.ts";
import { mountSymbols } from "./mount.ts";
import { inetskSymbols } from "./inetsk.ts";
import { privateSymbols } from "./private.ts";

export const symbols = {
  ck_abi_version: { parameters: [], result: "u32" },
  ...ptraceSymbols,
  ...fdSymbols,
  ...memorySymbols,
  ...restoreSymbols,
  ...probeSymbols,
  ...sockdiagSymbols,
  ...unixskSymbols,
  ...trackingSymbols,
  ...notifySymbols,
  ...anonfdSymbols,
  ...fdtableSymbols,
  ...ttySymbols,
  ...credsSymbols,
  ...nsSymbols,
  ...rtnlSymbols,
  ...mountSymbols,
  ...inetskSymbols,
  ...privateSymbols,
} as const satisfies Deno.ForeignLibraryInterface;

/** Must equal ck_abi_version() of the library, or the library is stale. */
export const ABI_VERSION = 11;
