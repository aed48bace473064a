# netns_probe.py LOG [UNIX_PATH]: sits in its network namespace; on SIGUSR1
# appends to LOG the interfaces it sees and whether a UDP socket bound to
# each IPv4/IPv6 address given in LOG.addrs (one a line) gets its own
# datagram back, and, when LOG.echo says "ADDR PORT", answers one datagram
# sent there from outside (a socket made after restore, in the restored
# namespace); with UNIX_PATH it also serves an echo on that UNIX socket (a
# listening socket it holds across the dump).
import os, signal, socket, sys, time

log = sys.argv[1]
try:
    os.setsid()  # the init of a PID namespace made by unshare --fork leads its own
except OSError:
    pass  # a session leader already
srv = None
if len(sys.argv) > 2:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sys.argv[2])
    srv.listen(4)

def probe(*_):
    names = ",".join(f"{i}:{n}" for i, n in socket.if_nameindex())
    out = [f"ifaces {names}"]
    try:
        addrs = [a.strip() for a in open(log + ".addrs") if a.strip()]
    except FileNotFoundError:
        addrs = []
    for a in addrs:
        fam = socket.AF_INET6 if ":" in a else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.bind((a, 0))
            s.settimeout(2)
            s.sendto(b"ping", s.getsockname())
            got = s.recv(16)
            out.append(f"udp {a} {'ok' if got == b'ping' else 'bad'}")
        except OSError as e:
            out.append(f"udp {a} error {e.errno}")
        finally:
            s.close()
    with open(log, "a") as f:
        f.write("report " + " | ".join(out) + "\n")
    try:
        addr, port = open(log + ".echo").read().split()
    except FileNotFoundError:
        return
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    s.settimeout(5)
    with open(log, "a") as f:
        f.write("listening\n")
    try:
        data, peer = s.recvfrom(64)
        s.sendto(b"echo " + data, peer)
        res = "echoed"
    except OSError as e:
        res = f"echo error {e}"
    s.close()
    with open(log, "a") as f:
        f.write(res + "\n")

signal.signal(signal.SIGUSR1, probe)
with open(log, "a") as f:
    f.write("ready\n")
while True:
    if srv is None:
        signal.pause()
        continue
    c, _ = srv.accept()
    data = c.recv(64)
    c.sendall(b"echo " + data)
    c.close()
