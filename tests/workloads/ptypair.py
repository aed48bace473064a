#!/usr/bin/env python3
"""ptypair.py DIR MODE [block] [modes]: holds the master of a pseudo-terminal it opened and runs
a child on the slave (its own session, the slave as controlling terminal,
stdio on it, and /dev/tty open as fd 3). MODE canon: the child is sh reading
lines; raw: a python loop reading raw bytes. The child says DIR/ready once set up, and reads only once
DIR/gate exists, so input typed before stays queued. This process reads the
master only when asked, so the child's output stays queued too.

With "block" it also holds a master whose slave was never opened (refused);
with "modes" the master is in packet mode and locked, the slave exclusive.

DIR/in     bytes to write to the master (renamed to in.done once written)
DIR/ask    asks for DIR/state: the slave's settings and window size
DIR/read   asks to read the master for a while into DIR/out
"""
import fcntl
import os
import struct
import sys
import termios
import time

d, mode, flags = sys.argv[1], sys.argv[2], set(sys.argv[3:])
TIOCPKT, TIOCGPKT, TIOCSPTLCK, TIOCGPTLCK = 0x5420, 0x80045438, 0x40045431, 0x80045439
TIOCEXCL, TIOCGEXCL = 0x540C, 0x80045440
m, s = os.openpty()
t = termios.tcgetattr(s)
t[3] &= ~termios.ECHOCTL
t[6][termios.VERASE] = b"\x08"
t[6][termios.VEOL] = b"!"
t[4] = t[5] = termios.B9600
termios.tcsetattr(s, termios.TCSANOW, t)
fcntl.ioctl(m, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
name = os.ttyname(s)

canon = f"""exec 3<>/dev/tty
echo hello-before
: > {d}/ready
while :; do
  if [ -e {d}/gate ]; then
    if IFS= read -r l; then echo "got:$l:$(tty)"; echo "via-tty:$l" >&3; else echo got-eof; fi
  else sleep 0.05; fi
done"""
raw = f"""
import os, time, tty
tty.setraw(0)
os.write(1, b"hello-before\\n")
t = os.open("/dev/tty", os.O_RDWR)
open("{d}/ready", "w").close()
while True:
    if os.path.exists("{d}/gate"):
        b = os.read(0, 100)
        os.write(1, b"raw:" + b.hex().encode() + b"\\n")
        os.write(t, b"via-tty:" + str(len(b)).encode() + b"\\n")
    else:
        time.sleep(0.05)
"""

pid = os.fork()
if pid == 0:
    os.setsid()
    fcntl.ioctl(s, termios.TIOCSCTTY, 0)
    for n in (0, 1, 2):
        os.dup2(s, n)
    os.closerange(3, 1 << 16)
    if mode == "canon":
        os.execvp("sh", ["sh", "-c", canon])
    os.execvp("python3", ["python3", "-c", raw])
if "modes" in flags:
    # Once the child has its fds (a locked slave cannot be opened).
    while not os.path.exists(f"{d}/ready"):
        time.sleep(0.01)
    fcntl.ioctl(m, TIOCPKT, struct.pack("i", 1))
    fcntl.ioctl(s, TIOCEXCL)
    fcntl.ioctl(m, TIOCSPTLCK, struct.pack("i", 1))
else:
    os.close(s)
if "block" in flags:
    # A second master whose slave nobody opens: something dump refuses.
    extra = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)


def log(line):
    with open(f"{d}/log", "a") as f:
        f.write(line + "\n")


log(f"start name={name} child={pid}")
while True:
    if os.path.exists(f"{d}/in"):
        with open(f"{d}/in", "rb") as f:
            os.write(m, f.read())
        os.rename(f"{d}/in", f"{d}/in.done")
    if os.path.exists(f"{d}/ask"):
        t = termios.tcgetattr(m)
        ws = struct.unpack("HHHH", fcntl.ioctl(m, termios.TIOCGWINSZ, b"\0" * 8))
        cc = b"".join(c if isinstance(c, bytes) else bytes([c]) for c in t[6]).hex()
        geti = lambda fd, req: struct.unpack("i", fcntl.ioctl(fd, req, b"\0" * 4))[0]
        modes = f"pkt={geti(m, TIOCGPKT)} lock={geti(m, TIOCGPTLCK)} mexcl={geti(m, TIOCGEXCL)}"
        if "modes" in flags:
            modes += f" sexcl={geti(s, TIOCGEXCL)}"
        with open(f"{d}/state.tmp", "w") as f:
            f.write(f"iflag={t[0]} oflag={t[1]} cflag={t[2]} lflag={t[3]} speed={t[4]},{t[5]} cc={cc} ws={ws} {modes}\n")
        os.rename(f"{d}/state.tmp", f"{d}/state")
        os.unlink(f"{d}/ask")
    if os.path.exists(f"{d}/read"):
        os.unlink(f"{d}/read")
        end = time.time() + 1.5
        got = b""
        fl = fcntl.fcntl(m, fcntl.F_GETFL)
        fcntl.fcntl(m, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        while time.time() < end:
            try:
                b = os.read(m, 4096)
                # Packet mode: each read starts with a status byte, 0 for data.
                got += (b[1:] if b[0] == 0 else b"<status>") if "modes" in flags else b
            except BlockingIOError:
                time.sleep(0.02)
        fcntl.fcntl(m, fcntl.F_SETFL, fl)
        with open(f"{d}/out.tmp", "wb") as f:
            f.write(got)
        os.rename(f"{d}/out.tmp", f"{d}/out")
    time.sleep(0.02)
