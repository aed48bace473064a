# UDP sockets whose queued datagrams must survive a dump. usage:
#   udp_queue.py DIR 4|6
# Sockets: "any" bound to the wildcard address, also in multicast group
# 239.1.2.3 (IPv4) / ff02::1:3 (IPv6) on lo, with IP_TOS/IPV6_TCLASS and
# IP_RECVORIGDSTADDR set; "conn" bound to loopback and connected to DIR's
# peer port; "lite" a UDP-Lite socket. DIR/ports is written once they are
# up ({"any": P, "conn": P, "lite": P}); the peer port is read from
# DIR/peer. Nothing is read until DIR/go exists; then every datagram of
# each socket, in order, goes to DIR/got as JSON lines {sock, data, from,
# to}, followed by each socket's addresses and options in DIR/state.
import ctypes, json, os, socket, struct, sys, time

d, v = sys.argv[1], sys.argv[2]
six = v == "6"
fam = socket.AF_INET6 if six else socket.AF_INET
lo = "::1" if six else "127.0.0.1"
wild = "::" if six else "0.0.0.0"
while not os.path.exists(f"{d}/peer"):
    time.sleep(0.01)
peer = int(open(f"{d}/peer").read())

anys = socket.socket(fam, socket.SOCK_DGRAM)
anys.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if six:
    anys.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
anys.bind((wild, 0))
if six:
    grp = socket.inet_pton(socket.AF_INET6, "ff02::1:3")
    anys.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, grp + struct.pack("@I", 1))
    anys.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0x28)
    anys.setsockopt(socket.IPPROTO_IPV6, 74, 1)  # IPV6_RECVORIGDSTADDR
else:
    mreq = struct.pack("4s4s", socket.inet_aton("239.1.2.3"), socket.inet_aton("127.0.0.1"))
    anys.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    anys.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x28)
    anys.setsockopt(socket.IPPROTO_IP, 20, 1)  # IP_RECVORIGDSTADDR
conn = socket.socket(fam, socket.SOCK_DGRAM)
conn.bind((lo, 0))
conn.connect((lo, peer))
lite = socket.socket(fam, socket.SOCK_DGRAM, 136)
lite.bind((lo, 0))
socks = {"any": anys, "conn": conn, "lite": lite}
with open(f"{d}/ports.tmp", "w") as f:
    json.dump({k: s.getsockname()[1] for k, s in socks.items()}, f)
os.rename(f"{d}/ports.tmp", f"{d}/ports")
while not os.path.exists(f"{d}/go"):
    time.sleep(0.01)


def dst(anc):
    for level, kind, data in anc:
        if (level, kind) in ((socket.IPPROTO_IP, 20), (socket.IPPROTO_IPV6, 74)):
            fam_ = struct.unpack("=H", data[:2])[0]
            port = struct.unpack("!H", data[2:4])[0]
            if fam_ == socket.AF_INET:
                return f"{socket.inet_ntoa(data[4:8])}:{port}"
            return f"[{socket.inet_ntop(socket.AF_INET6, data[8:24])}]:{port}"
    return ""


def member(s, group, ifindex):
    """Whether s joined group on ifindex (getsockopt MCAST_MSFILTER)."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(144 + 128)
    struct.pack_into("=I", buf, 0, ifindex)
    if six:
        struct.pack_into("=H", buf, 8, socket.AF_INET6)
        buf[16:32] = socket.inet_pton(socket.AF_INET6, group)
    else:
        struct.pack_into("=H", buf, 8, socket.AF_INET)
        buf[12:16] = socket.inet_aton(group)
    struct.pack_into("=I", buf, 140, 1)
    n = ctypes.c_uint32(len(buf))
    level = socket.IPPROTO_IPV6 if six else socket.IPPROTO_IP
    return libc.getsockopt(s.fileno(), level, 48, buf, ctypes.byref(n)) == 0


out = []
for name, s in socks.items():
    s.setblocking(False)
    while True:
        try:
            data, anc, _, frm = s.recvmsg(65536, 1024)
        except BlockingIOError:
            break
        out.append({"sock": name, "data": data.decode(), "from": f"{frm[0]}:{frm[1]}", "to": dst(anc)})
with open(f"{d}/got.tmp", "w") as f:
    f.write("".join(json.dumps(o) + "\n" for o in out))
os.rename(f"{d}/got.tmp", f"{d}/got")
state = {}
for name, s in socks.items():
    st = {"name": list(s.getsockname()[:2])}
    try:
        st["peer"] = list(s.getpeername()[:2])
    except OSError:
        st["peer"] = None
    if six:
        st["tclass"] = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS)
        st["v6only"] = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    else:
        st["tos"] = s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)
    st["reuse"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    st["member"] = member(s, "ff02::1:3" if six else "239.1.2.3", 1)
    state[name] = st
with open(f"{d}/state.tmp", "w") as f:
    json.dump(state, f)
os.rename(f"{d}/state.tmp", f"{d}/state")
while True:
    time.sleep(1)
