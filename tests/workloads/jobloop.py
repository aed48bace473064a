#!/usr/bin/env python3
"""jobloop.py DIR: a shell job that ticks into DIR/ticks and answers each line
it reads from its terminal with "pong:LINE" (and its terminal's name)."""
import os
import select
import sys
import time

d = sys.argv[1]
n = 0
while True:
    r, _, _ = select.select([0], [], [], 0.1)
    if r:
        line = sys.stdin.readline()
        if not line:
            print("job-eof", flush=True)
            time.sleep(0.1)
            continue
        print(f"pong:{line.strip()}:{os.ttyname(0)}", flush=True)
    n += 1
    with open(f"{d}/ticks", "w") as f:
        f.write(str(n))
