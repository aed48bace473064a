# Netlink sockets as programs hold them. usage: netlink_holder.py DIR
#   r0  NETLINK_ROUTE, never bound (as glibc's, before its first request)
#   r1  NETLINK_ROUTE bound to RTMGRP_IPV4_IFADDR (as `ip monitor` is), with
#       NETLINK_NO_ENOBUFS and a 256 KiB receive buffer
#   ue  NETLINK_KOBJECT_UEVENT bound to group 1 (as udev listeners are)
# DIR/before gets their port ids, groups and options; once DIR/go exists:
# r0 asks for every link and counts the answers, r1 reports what it has
# queued (a message from before the dump must not be seen) and then waits
# for the next address event; all of it goes to DIR/after.
import json, os, select, socket, struct, sys, time

d = sys.argv[1]
NETLINK_NO_ENOBUFS = 5
SOL_NETLINK = 270
r0 = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
r1 = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
r1.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
r1.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
r1.bind((0, 0x10))  # RTMGRP_IPV4_IFADDR
ue = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)  # NETLINK_KOBJECT_UEVENT
ue.bind((0, 1))


def state():
    return {
        "r0": list(r0.getsockname()),
        "r1": list(r1.getsockname()),
        "ue": list(ue.getsockname()),
        "r1_noenobufs": r1.getsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS),
        "r1_rcvbuf": r1.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    }


def put(name, obj):
    with open(f"{d}/{name}.tmp", "w") as f:
        json.dump(obj, f)
    os.rename(f"{d}/{name}.tmp", f"{d}/{name}")


put("before", state())
while not os.path.exists(f"{d}/go"):
    time.sleep(0.01)
after = state()
queued = []
r1.setblocking(False)
try:
    while True:
        queued.append(len(r1.recv(65536)))
except BlockingIOError:
    pass
after["r1_queued"] = queued
# RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, with an ifinfomsg.
r0.send(struct.pack("=LHHLL", 32, 18, 0x301, 1, 0) + bytes(16))
links = 0
r0.settimeout(5)
done = False
while not done:
    data = r0.recv(1 << 16)
    off = 0
    while off + 16 <= len(data):
        ln, typ = struct.unpack_from("=LH", data, off)
        if typ == 3:  # NLMSG_DONE
            done = True
            break
        if typ == 16:  # RTM_NEWLINK
            links += 1
        off += (ln + 3) & ~3
after["links"] = links
put("asked", after)
r1.setblocking(True)
r, _, _ = select.select([r1], [], [], 10)
if r:
    data = r1.recv(65536)
    after["event"] = struct.unpack_from("=LH", data, 0)[1]
put("after", after)
while True:
    time.sleep(1)
