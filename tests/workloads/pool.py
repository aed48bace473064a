# pool.py DIR: a multiprocessing.Pool(2) that keeps computing a running sum
# of squares, batch after batch, through its workers (pipes, threads and
# POSIX semaphores in /dev/shm, unlinked at once: SemLock). Each worker also
# adds what it computes to a shared mp.Value (a multiprocessing heap arena:
# a /dev/shm file unlinked at once, its fd kept, mapped shared by all) under
# its lock. After each batch it writes "BATCHES COUNT SUM SHARED" to DIR/sum
# (atomically); SUM must be the sum of k*k for k < COUNT, which only holds if
# the workers computed every batch right, and SHARED must equal SUM, which
# only holds if every worker's writes reached the parent's mapping.
import multiprocessing as mp
import os
import sys
import time

shared = None


def init(value):
    global shared
    shared = value


def square(x):
    with shared.get_lock():
        shared.value += x * x
    return x * x


if __name__ == "__main__":
    out = sys.argv[1]
    value = mp.Value("q", 0)
    with mp.Pool(2, initializer=init, initargs=(value,)) as pool:
        total = count = batches = 0
        while True:
            total += sum(pool.map(square, range(count, count + 10), chunksize=2))
            count += 10
            batches += 1
            with open(f"{out}/sum.tmp", "w") as f:
                f.write(f"{batches} {count} {total} {value.value}\n")
            os.replace(f"{out}/sum.tmp", f"{out}/sum")
            time.sleep(0.02)
