// Running jobs of known weight (threads each keeps busy) with at most
// `slots` weight at work at once, in the order given.

export interface Job<T> {
  weight: number;
  run: () => Promise<T>;
}

/** Results in job order; the first failure rejects once the jobs started
 * before it have settled (none is left running behind the caller's back). */
export async function inParallel<T>(jobs: Job<T>[], slots: number): Promise<T[]> {
  const results = new Array<T>(jobs.length);
  const running = new Set<Promise<void>>();
  let busy = 0, failure: unknown, failed = false;
  for (const [i, job] of jobs.entries()) {
    const w = Math.min(job.weight, slots);
    while (busy + w > slots || (failed && running.size)) await Promise.race(running);
    if (failed) break;
    busy += w;
    const p: Promise<void> = job.run().then(
      (r) => void (results[i] = r),
      (err) => {
        if (!failed) [failed, failure] = [true, err];
      },
    ).finally(() => {
      busy -= w;
      running.delete(p);
    });
    running.add(p);
  }
  await Promise.all(running);
  if (failed) throw failure;
  return results;
}
