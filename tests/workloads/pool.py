# pool.py DIR: a multiprocessing.Pool(2) that keeps computing a running sum
# of squares, batch after batch, through its workers (pipes, threads and
# POSIX semaphores in /dev/shm, unlinked at once: SemLock). After each batch
# it writes "BATCHES COUNT SUM" to DIR/sum (atomically); SUM must always be
# the sum of k*k for k < COUNT, which only holds if the workers computed
# every batch right.
import multiprocessing as mp
import os
import sys
import time


def square(x):
    return x * x


if __name__ == "__main__":
    out = sys.argv[1]
    with mp.Pool(2) as pool:
        total = count = batches = 0
        while True:
            total += sum(pool.map(square, range(count, count + 10), chunksize=2))
            count += 10
            batches += 1
            with open(f"{out}/sum.tmp", "w") as f:
                f.write(f"{batches} {count} {total}\n")
            os.replace(f"{out}/sum.tmp", f"{out}/sum")
            time.sleep(0.02)
