# Datagram sockets in states a restore gets wrong when it guesses: one bound
# and connected to its own name, and one end of a socketpair whose other end
# sent it a message carrying a descriptor and then closed. Writes
# DIR/before.json, waits for DIR/go, checks, writes DIR/after.json.
import array, json, os, socket, time, sys

d = sys.argv[1]
U, SOL = socket.AF_UNIX, socket.SOL_SOCKET

me = socket.socket(U, socket.SOCK_DGRAM)
me.bind(f"{d}/self.sock")
me.connect(f"{d}/self.sock")
me.send(b"to-myself")

a, b = socket.socketpair(U, socket.SOCK_DGRAM)
pr, pw = os.pipe()
os.write(pw, b"through-a-dead-peer")
os.close(pw)
b.sendmsg([b"carrier"], [(SOL, socket.SCM_RIGHTS, array.array("i", [pr]))])
os.close(pr)
b.close()

with open(f"{d}/before.json.tmp", "w") as f:
    json.dump({"pid": os.getpid()}, f)
os.rename(f"{d}/before.json.tmp", f"{d}/before.json")
while not os.path.exists(f"{d}/go"):
    time.sleep(0.02)

after = {}
me.settimeout(2)
after["self_queued"] = me.recv(100).decode()
me.send(b"again")
after["self_again"] = me.recv(100).decode()
after["self_peer"] = me.getpeername()
a.settimeout(2)
m, anc, _, _ = a.recvmsg(100, socket.CMSG_SPACE(4))
fds = array.array("i")
for c in anc:
    if c[1] == socket.SCM_RIGHTS:
        fds.frombytes(c[2])
after["carrier"] = m.decode()
after["carried"] = os.read(fds[0], 100).decode() if fds else None
try:
    a.send(b"x")
    after["dead_send"] = "ok"
except OSError as e:
    after["dead_send"] = type(e).__name__
with open(f"{d}/after.json.tmp", "w") as f:
    json.dump(after, f)
os.rename(f"{d}/after.json.tmp", f"{d}/after.json")
while True:
    time.sleep(1)
