// ckpt command-line entry point. The library API is in mod.ts.
import { runCli } from "./src/cli/run.ts";

if (import.meta.main) {
  Deno.exit(await runCli(Deno.args));
}
