#!/usr/bin/env python3
"""pidfds.py DIR [outside PID]: holds pidfds of a running child, of a zombie
child, of a child that exited and was reaped, of itself (PIDFD_NONBLOCK),
one dup'ed and one inherited by its running child; with `outside PID`, also
one of PID (a process outside the tree). Once DIR/go exists it uses them and
writes what it sees to DIR/log, line by line."""
import fcntl
import os
import select
import signal
import sys
import time

d = sys.argv[1]


def log(line):
    with open(f"{d}/log", "a") as f:
        f.write(line + "\n")


def readable(fd, ms):
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(ms))


def child_loop():
    # Holds its parent's pidfd, inherited (same open file).
    while not os.path.exists(f"{d}/go"):
        time.sleep(0.02)
    try:
        signal.pidfd_send_signal(3, 0)
        log("child: parent pidfd alive")
    except OSError as e:
        log(f"child: parent pidfd {e.errno}")
    while True:
        time.sleep(0.05)


me = os.pidfd_open(os.getpid(), os.O_NONBLOCK)  # PIDFD_NONBLOCK
running = os.fork()
if running == 0:
    os.dup2(me, 3)
    os.closerange(4, 1 << 16)
    child_loop()
zombie = os.fork()
if zombie == 0:
    os._exit(7)
reaped = os.fork()
if reaped == 0:
    time.sleep(0.2)
    os._exit(0)
fd_running = os.pidfd_open(running)
fd_zombie = os.pidfd_open(zombie)
fd_reaped = os.pidfd_open(reaped)
os.waitpid(reaped, 0)
fd_dup = os.dup(fd_running)
fd_outside = os.pidfd_open(int(sys.argv[3])) if sys.argv[2:3] == ["outside"] else -1
while os.path.exists(f"/proc/{zombie}") and open(f"/proc/{zombie}/stat").read().split(") ")[1][0] != "Z":
    time.sleep(0.01)
log(f"ready running={running} zombie={zombie} reaped={reaped} fds={me},{fd_running},{fd_zombie},{fd_reaped},{fd_dup}")
while not os.path.exists(f"{d}/go"):
    time.sleep(0.02)
time.sleep(0.3)

log(f"self nonblock={bool(fcntl.fcntl(me, fcntl.F_GETFL) & os.O_NONBLOCK)} cloexec={bool(fcntl.fcntl(me, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)}")
signal.pidfd_send_signal(me, 0)
log("self alive")
try:
    signal.pidfd_send_signal(fd_reaped, 0)
    log("reaped: alive?!")
except ProcessLookupError:
    log(f"reaped: gone readable={readable(fd_reaped, 0)}")
log(f"zombie: readable={readable(fd_zombie, 1000)}")
r = os.waitid(os.P_PIDFD, fd_zombie, os.WEXITED)
log(f"zombie: waited pid={r.si_pid} status={r.si_status}")
log(f"running: readable={readable(fd_running, 0)}")
signal.pidfd_send_signal(fd_dup, signal.SIGTERM)
log(f"running: after TERM readable={readable(fd_running, 3000)}")
r = os.waitid(os.P_PIDFD, fd_running, os.WEXITED)
log(f"running: waited pid={r.si_pid} killed={r.si_code == os.CLD_KILLED} sig={r.si_status}")
log("done")
while True:
    time.sleep(1)
