# An outside client of an echo server: sends numbered lines and checks that
# each comes back, in order, none lost or repeated; across a dump and
# restore of the server it must see no error. usage:
#   tcp_counter.py HOST PORT LOG [CONNS]
# LOG gets "ok N maxgap_ms G" lines (N lines echoed, G the longest wait for
# one), or "error ..." and the client exits 1.
import socket, sys, time

host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
nconn = int(sys.argv[4]) if len(sys.argv) > 4 else 1
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
conns = []
for _ in range(nconn):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect((host, port))
    s.settimeout(60)
    conns.append([s, b""])
n = 0
maxgap = 0.0
last_write = 0.0


def report(text):
    with open(log + ".tmp", "w") as f:
        f.write(text + "\n")
    import os
    os.rename(log + ".tmp", log)


try:
    while True:
        for c in conns:
            s = c[0]
            t0 = time.monotonic()
            s.sendall(b"%d\n" % n)
            want = b"%d\n" % n
            while len(c[1]) < len(want):
                got = s.recv(65536)
                if not got:
                    raise RuntimeError("end of file")
                c[1] += got
            if not c[1].startswith(want):
                raise RuntimeError(f"got {c[1][:20]!r}, expected {want!r}")
            c[1] = c[1][len(want):]
            maxgap = max(maxgap, time.monotonic() - t0)
        n += 1
        now = time.monotonic()
        if now - last_write > 0.05:
            report(f"ok {n} maxgap_ms {maxgap * 1000:.1f}")
            last_write = now
        time.sleep(0.005)
except Exception as e:
    report(f"error after {n}: {e!r}")
    sys.exit(1)
