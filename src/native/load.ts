// Loads libckpt.so: from CKPT_LIB, from zig-out/ beside the sources, or — in a
// `deno compile` binary, where the library is an embedded file dlopen cannot
// see — from a private copy extracted at start.
import { ABI_VERSION, symbols } from "./symbols/mod.ts";

export type NativeLib = Deno.DynamicLibrary<typeof symbols>;
export type Symbols = NativeLib["symbols"];

let loaded: Symbols | undefined;

export function defaultLibraryPath(): string {
  const env = Deno.env.get("CKPT_LIB");
  if (env) return env;
  return new URL("../../zig-out/lib/libckpt.so", import.meta.url).pathname;
}

/** Opens a library from bytes: written owner-only to a fresh private
 * directory, opened, and unlinked at once (the mapping outlives the file). */
export function openFromBytes(bytes: Uint8Array): NativeLib {
  const dir = Deno.makeTempDirSync({ prefix: "ckpt-lib-" });
  const path = `${dir}/libckpt.so`;
  try {
    Deno.chmodSync(dir, 0o700);
    Deno.writeFileSync(path, bytes, { mode: 0o700 });
    return Deno.dlopen(path, symbols);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

export function openLibrary(path: string): NativeLib {
  let lib: NativeLib;
  try {
    lib = Deno.dlopen(path, symbols);
  } catch (err) {
    let bytes: Uint8Array;
    try {
      bytes = Deno.readFileSync(path);
    } catch {
      throw new Error(
        `cannot load the native library ${path}: ${(err as Error).message}; ` +
          `build it with 'deno task build' (or run ./ckpt, which builds it)`,
      );
    }
    lib = openFromBytes(bytes);
  }
  checkAbi(lib, path);
  return lib;
}

function checkAbi(lib: Deno.DynamicLibrary<Pick<typeof symbols, "ck_abi_version">>, path: string) {
  const abi = lib.symbols.ck_abi_version();
  if (abi !== ABI_VERSION) {
    lib.close();
    throw new Error(
      `native library ${path} has ABI ${abi}, this ckpt needs ${ABI_VERSION}: rebuild it with 'deno task build'`,
    );
  }
}

export function native(): Symbols {
  loaded ??= bindOnUse(defaultLibraryPath());
  return loaded;
}

/** The library's symbols, each bound the first time it is used: Deno
 * compiles a call stub for every symbol it binds, about 0.2 ms each, and one
 * command uses a third of them — binding all at once was a quarter of a lazy
 * restore's time to its first instruction. Each is bound through the path
 * dlopen already holds, so nothing is read again. A library that only loads
 * from its bytes (its copy is gone at once) is bound whole, as before. */
function bindOnUse(path: string): Symbols {
  let first;
  try {
    first = Deno.dlopen(path, { ck_abi_version: symbols.ck_abi_version });
  } catch {
    return openLibrary(path).symbols;
  }
  checkAbi(first, path);
  const out: Record<string, unknown> = {};
  for (const [name, def] of Object.entries(symbols)) {
    Object.defineProperty(out, name, {
      configurable: true,
      enumerable: true,
      get() {
        const fn = Deno.dlopen(path, { [name]: def }).symbols[name];
        Object.defineProperty(out, name, { value: fn, enumerable: true });
        return fn;
      },
    });
  }
  return out as Symbols;
}

/** glibc's rseq registration of the calling thread: the area sits at the
 * thread pointer plus __rseq_offset. Size 0 when glibc registered none (or
 * is too old to say). */
export function glibcRseq(): { offset: bigint; size: number } {
  try {
    const libc = Deno.dlopen("libc.so.6", {
      __rseq_offset: { type: "isize" },
      __rseq_size: { type: "u32" },
    });
    const r = {
      offset: BigInt(libc.symbols.__rseq_offset),
      size: Number(libc.symbols.__rseq_size),
    };
    libc.close();
    return r;
  } catch {
    return { offset: 0n, size: 0 };
  }
}
