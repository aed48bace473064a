// Without -d, ckpt stays the restored task's parent: it forwards SIGINT and
// SIGTERM to it and exits with its status (128+N when killed by signal N).
import { kill, wait, WNOHANG } from "../native/mod.ts";

export async function superviseUntilExit(pid: number): Promise<number> {
  const forward = (sig: Deno.Signal, n: number) => {
    const h = () => kill(pid, n);
    Deno.addSignalListener(sig, h);
    return () => Deno.removeSignalListener(sig, h);
  };
  const undo = [forward("SIGINT", 2), forward("SIGTERM", 15)];
  try {
    for (;;) {
      const st = wait(pid, WNOHANG);
      if (st && st.exited) return st.exitCode;
      if (st && st.signaled) return 128 + st.termSig;
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    for (const u of undo) u();
  }
}
