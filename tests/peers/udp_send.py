# Sends datagrams from one socket outside the tree and prints its address.
# usage: udp_send.py SRC DST PORT PROTO MSG...  (PROTO udp|udplite; DST may
# be a multicast group, sent out through lo; SRC may be HOST@PORT)
import json, socket, struct, sys

src, dst, port, proto = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM, 136 if proto == "udplite" else 0)
host, _, sport = src.partition("@")
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, int(sport or 0)))
if fam == socket.AF_INET and socket.inet_aton(dst)[0] >= 224:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
if fam == socket.AF_INET6 and dst.startswith("ff"):
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, 1)
for m in sys.argv[5:]:
    if fam == socket.AF_INET6 and dst.startswith("ff"):
        s.sendto(m.encode(), (dst, port, 0, 1))
    else:
        s.sendto(m.encode(), (dst, port))
print(json.dumps({"from": f"{s.getsockname()[0]}:{s.getsockname()[1]}"}))
