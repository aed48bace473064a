# A TCP echo server: every connection gets back what it sends. usage:
# tcp_echo.py PORTFILE [HOST [MIB [HOLD]]]; writes the port it listens on to
# PORTFILE; MIB: memory it fills first (ballast, for the benchmark); HOLD: a
# file it opens once it has accepted a connection (an fd after the sockets).
import os, select, socket, sys

host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
ballast = bytearray(os.urandom(1 << 20) * int(sys.argv[3])) if len(sys.argv) > 3 else b""
hold = sys.argv[4] if len(sys.argv) > 4 else None
held = None
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
lst = socket.socket(fam, socket.SOCK_STREAM)
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind((host, 0))
lst.listen(16)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(lst.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
conns = {}
while True:
    r, _, _ = select.select([lst, *conns], [], [])
    for s in r:
        if s is lst:
            c, _ = lst.accept()
            conns[c] = b""
            if hold and not held:
                held = open(hold, "rb")
            continue
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            del conns[s]
            s.close()
            continue
        s.sendall(data)
