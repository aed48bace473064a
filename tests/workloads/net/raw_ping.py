# Raw and ping sockets as ping(8)-like programs hold them. usage:
#   raw_ping.py DIR
#   raw   AF_INET SOCK_RAW IPPROTO_ICMP bound to 127.0.0.1, ICMP_FILTER that
#         lets only echo replies through
#   ping  AF_INET SOCK_DGRAM IPPROTO_ICMP (a ping socket) bound to 127.0.0.1
#         (its port is the echo id) and connected to it
# DIR/before gets their addresses and the filter; once DIR/go exists, each
# sends an echo request to 127.0.0.1 and reads the reply; DIR/after gets
# the same fields and what came back.
import json, os, socket, struct, sys, time

d = sys.argv[1]
ICMP_FILTER = 1
SOL_RAW = 255
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
raw.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", ~(1 << 0) & 0xFFFFFFFF))
raw.bind(("127.0.0.1", 0))
ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
ping.bind(("127.0.0.1", 0))
ping.connect(("127.0.0.1", 0))


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def echo(ident, seq, payload):
    h = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    return h[:2] + struct.pack("!H", csum(h)) + h[4:]


def state():
    return {
        "raw": list(raw.getsockname()),
        "ping": list(ping.getsockname()),
        "filter": struct.unpack("I", raw.getsockopt(SOL_RAW, ICMP_FILTER, 4))[0],
    }


def put(name, obj):
    with open(f"{d}/{name}.tmp", "w") as f:
        json.dump(obj, f)
    os.rename(f"{d}/{name}.tmp", f"{d}/{name}")


put("before", state())
while not os.path.exists(f"{d}/go"):
    time.sleep(0.01)
out = state()
ping.settimeout(5)
ping.send(echo(0, 7, b"ping socket"))
reply = ping.recv(1024)
out["ping_reply"] = [reply[0], reply[8:].decode()]
raw.settimeout(5)
raw.sendto(echo(0x4242, 9, b"raw socket"), ("127.0.0.1", 0))
# A raw socket sees every ICMP packet (the ping socket's reply too): ours
# is the one with our id.
while True:
    pkt = raw.recv(1024)
    ihl = (pkt[0] & 15) * 4
    ident = struct.unpack("!H", pkt[ihl + 4:ihl + 6])[0]
    if ident == 0x4242:
        break
out["raw_reply"] = [pkt[ihl], ident, pkt[ihl + 8:].decode()]
put("after", out)
while True:
    time.sleep(1)
