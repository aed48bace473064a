# Listening TCP sockets with the options servers set, and a bound socket
# that does not listen. usage: listen_opts.py DIR
#   v6   [::]:0, IPV6_V6ONLY, SO_REUSEADDR, SO_REUSEPORT, IP_FREEBIND,
#        TCP_DEFER_ACCEPT, TCP_MAXSEG, SO_RCVBUF, SO_KEEPALIVE and
#        TCP_KEEPIDLE (inherited by what it accepts), backlog 7
#   v4   127.0.0.1:0, SO_BINDTODEVICE lo, TCP_FASTOPEN, TCP_NODELAY, backlog 3
#   idle 127.0.0.1:0 bound only, SO_LINGER {1, 3}
# DIR/before and, once DIR/go exists, DIR/after get every socket's address
# and options as JSON; then one connection is accepted on each listener and
# DIR/accepted gets its TCP_KEEPIDLE and SO_KEEPALIVE.
import json, os, socket, struct, sys, time

d = sys.argv[1]
T = socket.IPPROTO_TCP
v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
v6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
v6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
v6.setsockopt(socket.IPPROTO_IP, 15, 1)  # IP_FREEBIND
v6.setsockopt(T, socket.TCP_DEFER_ACCEPT, 5)
v6.setsockopt(T, socket.TCP_MAXSEG, 1200)
v6.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
v6.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
v6.setsockopt(T, socket.TCP_KEEPIDLE, 77)
v6.bind(("::", 0))
v6.listen(7)
v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
v4.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
v4.setsockopt(T, 23, 5)  # TCP_FASTOPEN
v4.setsockopt(T, socket.TCP_NODELAY, 1)
v4.bind(("127.0.0.1", 0))
v4.listen(3)
idle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
idle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 3))
idle.bind(("127.0.0.1", 0))


def opts():
    g = lambda s, l, o: s.getsockopt(l, o)
    return {
        "v6": {
            "name": list(v6.getsockname()[:2]),
            "v6only": g(v6, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
            "reuseaddr": g(v6, socket.SOL_SOCKET, socket.SO_REUSEADDR),
            "reuseport": g(v6, socket.SOL_SOCKET, socket.SO_REUSEPORT),
            "freebind": g(v6, socket.IPPROTO_IP, 15),
            "defer": g(v6, T, socket.TCP_DEFER_ACCEPT),
            "maxseg": g(v6, T, socket.TCP_MAXSEG),
            "rcvbuf": g(v6, socket.SOL_SOCKET, socket.SO_RCVBUF),
            "keepalive": g(v6, socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "keepidle": g(v6, T, socket.TCP_KEEPIDLE),
        },
        "v4": {
            "name": list(v4.getsockname()),
            "device": v4.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0").decode(),
            "fastopen": g(v4, T, 23),
            "nodelay": g(v4, T, socket.TCP_NODELAY),
        },
        "idle": {
            "name": list(idle.getsockname()),
            "linger": list(struct.unpack("ii", idle.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))),
        },
    }


def put(name, obj):
    with open(f"{d}/{name}.tmp", "w") as f:
        json.dump(obj, f)
    os.rename(f"{d}/{name}.tmp", f"{d}/{name}")


put("before", opts())
while not os.path.exists(f"{d}/go"):
    time.sleep(0.01)
put("after", opts())
a6, _ = v6.accept()
a4, _ = v4.accept()
put("accepted", {
    "keepidle": a6.getsockopt(T, socket.TCP_KEEPIDLE),
    "keepalive": a6.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "v4data": a4.recv(100).decode(),
})
while True:
    time.sleep(1)
