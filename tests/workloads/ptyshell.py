#!/usr/bin/env python3
"""ptyshell.py: runs an interactive bash on a pseudo-terminal of its own (the
terminal a user's shell would have) and relays: its stdin to the terminal,
the terminal's output to its stdout. Exits when bash does."""
import os
import pty
import select
import sys

pid, m = pty.fork()
if pid == 0:
    os.environ["PS1"] = "PROMPT> "
    os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
while True:
    r, _, _ = select.select([0, m], [], [])
    if 0 in r:
        data = os.read(0, 4096)
        if not data:
            break
        os.write(m, data)
    if m in r:
        try:
            data = os.read(m, 4096)
        except OSError:
            break
        if not data:
            break
        os.write(1, data)
