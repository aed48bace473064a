#!/usr/bin/env python3
"""jobloop.py DIR: a shell job that ticks into DIR/ticks and answers each line
it reads from its terminal with "pong:LINE:TTY:echo=E" (E: whether its
terminal echoes). It turns echo off and sets the window size to 40x100 when
it starts (like a full-screen program), and says "winch:ROWSxCOLS" on each
SIGWINCH."""
import fcntl
import os
import select
import signal
import struct
import sys
import termios
import time

d = sys.argv[1]


def size():
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))
    return f"{rows}x{cols}"


signal.signal(signal.SIGWINCH, lambda *_: print(f"winch:{size()}", flush=True))
t = termios.tcgetattr(0)
t[3] &= ~termios.ECHO
termios.tcsetattr(0, termios.TCSANOW, t)
fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
n = 0
while True:
    try:
        r, _, _ = select.select([0], [], [], 0.1)
    except InterruptedError:
        continue
    if r:
        line = sys.stdin.readline()
        if not line:
            print("job-eof", flush=True)
            time.sleep(0.1)
            continue
        echo = int(bool(termios.tcgetattr(0)[3] & termios.ECHO))
        print(f"pong:{line.strip()}:{os.ttyname(0)}:echo={echo}", flush=True)
    n += 1
    with open(f"{d}/ticks", "w") as f:
        f.write(str(n))
