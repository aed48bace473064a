// inParallel: never more weight at work than slots, results in job order,
// and a failure reported only once everything started has settled.
import { assertEquals, assertRejects } from "@std/assert";
import { inParallel } from "../src/util/pool.ts";

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("inParallel keeps within its slots and returns results in job order", async () => {
  let busy = 0, most = 0;
  const jobs = [1, 2, 1, 1, 2, 1].map((weight, i) => ({
    weight,
    run: async () => {
      busy += weight;
      most = Math.max(most, busy);
      await tick(5 + (i % 3) * 3);
      busy -= weight;
      return i;
    },
  }));
  assertEquals(await inParallel(jobs, 2), [0, 1, 2, 3, 4, 5]);
  assertEquals(most, 2);
});

Deno.test("inParallel rejects with the first failure after the running jobs end", async () => {
  let settled = 0, started = 0;
  const jobs = [0, 1, 2, 3].map((i) => ({
    weight: 1,
    run: async () => {
      started++;
      await tick(i === 0 ? 20 : 2);
      settled++;
      if (i === 1) throw new Error("job 1 failed");
      return i;
    },
  }));
  await assertRejects(() => inParallel(jobs, 2), Error, "job 1 failed");
  assertEquals(settled, started, "nothing left running");
  assertEquals(started < 4, true, "no new job after the failure");
});
