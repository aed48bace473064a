// Synchronous pauses: ptrace requests and the waits that go with them must
// stay on one thread in one uninterrupted stretch of JS, so no awaiting.
const cell = new Int32Array(new SharedArrayBuffer(4));

export function sleepSync(ms: number): void {
  Atomics.wait(cell, 0, 0, ms);
}

/** Polls `fn` until it returns a value or `ms` pass; undefined on timeout. */
export function pollSync<T>(ms: number, fn: () => T | undefined): T | undefined {
  const deadline = performance.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (performance.now() > deadline) return undefined;
    sleepSync(1);
  }
}
