# A parent and a forked child talking over a SEQPACKET socketpair; the parent
# has an unread reply queued at dump time. Logs what each side receives.
import os, socket, sys, time
d = sys.argv[1]
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
a.send(b"queued-before-dump")
pid = os.fork()
if pid == 0:
    a.close()
    log = open(f"{d}/child.log", "a", buffering=1)
    while True:
        m = b.recv(100)
        log.write(m.decode() + "\n")
        b.send(b"ack:" + m)
b.close()
open(f"{d}/ready", "w").write(f"{os.getpid()} {pid}")
plog = open(f"{d}/parent.log", "a", buffering=1)
i = 0
while True:
    if os.path.exists(f"{d}/go"):
        a.send(f"msg{i}".encode()); plog.write(a.recv(100).decode() + "\n"); i += 1
    time.sleep(0.05)
