# A redis client outside the tree sending commands in a loop: SET k:N N and
# INCR counter, every reply checked (+OK, then N+1). usage:
#   redis_loop.py HOST PORT LOG
# LOG gets "ok N maxgap_ms G" (N commands answered, G the longest wait for
# one reply), or "error ..." and the client exits 1.
import os, socket, sys, time

host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port))
s.settimeout(60)
buf = b""


def report(text):
    with open(log + ".tmp", "w") as f:
        f.write(text + "\n")
    os.rename(log + ".tmp", log)


def line():
    global buf
    while b"\r\n" not in buf:
        got = s.recv(65536)
        if not got:
            raise RuntimeError("end of file")
        buf += got
    out, buf = buf.split(b"\r\n", 1)
    return out


def cmd(*args):
    s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    return line()


n = 0
maxgap = 0.0
last = 0.0
try:
    while True:
        t0 = time.monotonic()
        r = cmd(b"SET", b"k:%d" % n, b"%d" % n)
        if r != b"+OK":
            raise RuntimeError(f"SET answered {r!r}")
        r = cmd(b"INCR", b"counter")
        if r != b":%d" % (n + 1):
            raise RuntimeError(f"INCR answered {r!r}, expected {n + 1}")
        maxgap = max(maxgap, time.monotonic() - t0)
        n += 1
        now = time.monotonic()
        if now - last > 0.05:
            report(f"ok {n} maxgap_ms {maxgap * 1000:.1f}")
            last = now
        time.sleep(0.002)
except Exception as e:
    report(f"error after {n}: {e!r}")
    sys.exit(1)
