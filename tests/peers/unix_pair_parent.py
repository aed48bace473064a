# A parent that keeps one end of a socketpair and forks a child (its own
# session, only fds 0-2 and the other end) that answers "echo:MSG" to every
# MSG and logs it to DIR/child.log. The test dumps the child alone: its
# socket's peer stays outside, with this parent.
import json, os, signal, socket, sys, time

d = sys.argv[1]
mine, theirs = socket.socketpair()
pid = os.fork()
if pid == 0:
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for n in (0, 1, 2):
        os.dup2(null, n)
    os.dup2(theirs.fileno(), 3)
    os.closerange(4, 1024)
    s = socket.socket(fileno=3)
    while True:
        data = s.recv(100)
        if not data:
            time.sleep(0.05)
            continue
        with open(f"{d}/child.log", "a") as f:
            f.write(data.decode() + "\n")
        s.send(b"echo:" + data)
# Killed by the dump, the child must not linger as a zombie holding its pid.
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
ino = os.fstat(theirs.fileno()).st_ino
theirs.close()
print(json.dumps({"child": pid, "ino": ino}), flush=True)
mine.send(b"hello")
print(json.dumps({"reply": mine.recv(100).decode()}), flush=True)
while True:
    time.sleep(1)
