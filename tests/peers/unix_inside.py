# One process holding both ends of every kind of UNIX socket connection, with
# data queued everywhere, for tests/unix_restore_test.ts. It writes what it
# set up to DIR/before.json, waits for DIR/go (created after the restore), then
# reads every queue, accepts, checks names and options, and writes what it
# saw to DIR/after.json.
import array, fcntl, json, os, signal, socket, sys, time

d, abstract = sys.argv[1], sys.argv[2]
U = socket.AF_UNIX
SOL, PASSCRED, PEEK_OFF = socket.SOL_SOCKET, 16, 42

s1, s2 = socket.socketpair(U, socket.SOCK_STREAM)
s1.send(b"to-s2-1"); s1.send(b"to-s2-2"); s2.send(b"to-s1")
q1, q2 = socket.socketpair(U, socket.SOCK_SEQPACKET)
q1.send(b"m1"); q1.send(b"m2"); q2.send(b"back")
d1, d2 = socket.socketpair(U, socket.SOCK_DGRAM)
d1.send(b"x"); d1.send(b"yy"); d2.send(b"z")

lst = socket.socket(U, socket.SOCK_STREAM)
lst.bind(f"{d}/listen.sock")
os.chmod(f"{d}/listen.sock", 0o640)
os.chown(f"{d}/listen.sock", 1234, 5678)
lst.listen(7)
c1 = socket.socket(U, socket.SOCK_STREAM); c1.connect(f"{d}/listen.sock")
c2 = socket.socket(U, socket.SOCK_STREAM); c2.connect(f"{d}/listen.sock")

ab = socket.socket(U, socket.SOCK_DGRAM)
ab.bind("\0" + abstract)
gone = socket.socket(U, socket.SOCK_DGRAM)
gone.bind(f"{d}/unlinked.sock")
os.unlink(f"{d}/unlinked.sock")

r = socket.socket(U, socket.SOCK_DGRAM); r.bind(f"{d}/r.sock")
a = socket.socket(U, socket.SOCK_DGRAM); a.bind(f"{d}/a.sock")
b = socket.socket(U, socket.SOCK_DGRAM); b.bind(f"{d}/b.sock")
a.sendto(b"from-a", f"{d}/r.sock"); b.sendto(b"from-b", f"{d}/r.sock"); a.sendto(b"from-a2", f"{d}/r.sock")

f1, f2 = socket.socketpair(U, socket.SOCK_STREAM)
pr, pw = os.pipe()
os.write(pw, b"pipe-data")
f1.sendmsg([b"fd"], [(SOL, socket.SCM_RIGHTS, array.array("i", [pr]))])
os.close(pr)
# A socket in flight, with a message of its own queued in it.
g1, g2 = socket.socketpair(U, socket.SOCK_DGRAM)
g2.send(b"inner")
f1.sendmsg([b"sk"], [(SOL, socket.SCM_RIGHTS, array.array("i", [g1.fileno()]))])
g1.close()

h1, h2 = socket.socketpair(U, socket.SOCK_STREAM)
h1.send(b"last"); h1.shutdown(socket.SHUT_WR)

s1.setsockopt(SOL, PASSCRED, 1)
s1.setsockopt(SOL, socket.SO_RCVBUF, 50000)
os.set_blocking(s2.fileno(), False)
os.set_inheritable(s1.fileno(), True)
h1.setsockopt(SOL, PEEK_OFF, 3)

before = {"rcvbuf": s1.getsockopt(SOL, socket.SO_RCVBUF), "pid": os.getpid()}
with open(f"{d}/before.json.tmp", "w") as f:
    json.dump(before, f)
os.rename(f"{d}/before.json.tmp", f"{d}/before.json")

# A file, not a signal, says "go": the restored process is only touched by the test through it.
while not os.path.exists(f"{d}/go"):
    time.sleep(0.02)

def drain(s, n=10):
    out = []
    s.setblocking(False)
    for _ in range(n):
        try:
            m = s.recv(4096)
        except BlockingIOError:
            break
        if not m:
            out.append("EOF")
            break
        out.append(m.decode())
    return out

after = {}
after["s2_nonblock"] = bool(fcntl.fcntl(s2.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)
after["s1_cloexec"] = bool(fcntl.fcntl(s1.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
after["s2_cloexec"] = bool(fcntl.fcntl(s2.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
after["passcred"] = s1.getsockopt(SOL, PASSCRED)
after["rcvbuf"] = s1.getsockopt(SOL, socket.SO_RCVBUF)
after["peek_off"] = h1.getsockopt(SOL, PEEK_OFF)
after["s2"] = "".join(drain(s2)); after["s1"] = "".join(drain(s1))
after["q2"] = drain(q2); after["q1"] = drain(q1)
after["d2"] = drain(d2); after["d1"] = drain(d1)
s1.send(b"new"); after["s2_new"] = "".join(drain(s2))
h1.setsockopt(SOL, PEEK_OFF, -1)
after["h2"] = drain(h2)
try:
    h1.send(b"more")
    after["h1_send"] = "ok"
except OSError as e:
    after["h1_send"] = type(e).__name__
lst.settimeout(2)
c1.send(b"hello1"); c2.send(b"hello2")
got = []
for _ in range(2):
    conn, _ = lst.accept()
    conn.settimeout(2)
    got.append(conn.recv(100).decode())
after["accepted"] = got
st = os.stat(f"{d}/listen.sock")
after["listen_mode"] = st.st_mode & 0o777
after["listen_owner"] = [st.st_uid, st.st_gid]
after["abstract"] = ab.getsockname().decode(errors="replace") if isinstance(ab.getsockname(), bytes) else ab.getsockname()
after["unlinked_name"] = gone.getsockname()
after["unlinked_exists"] = os.path.exists(f"{d}/unlinked.sock")
r.setblocking(False)
msgs = []
for _ in range(3):
    m, frm = r.recvfrom(100)
    msgs.append([m.decode(), frm])
after["r"] = msgs
f2.settimeout(2)
m, anc, _, _ = f2.recvmsg(2, socket.CMSG_SPACE(4))
fds = array.array("i"); [fds.frombytes(c[2]) for c in anc if c[1] == socket.SCM_RIGHTS]
after["fd_msg"] = m.decode()
after["fd_data"] = os.read(fds[0], 100).decode() if fds else None
m, anc, _, _ = f2.recvmsg(2, socket.CMSG_SPACE(4))
fds = array.array("i"); [fds.frombytes(c[2]) for c in anc if c[1] == socket.SCM_RIGHTS]
after["sk_msg"] = m.decode()
if fds:
    inner = socket.socket(fileno=fds[0])
    inner.settimeout(2)
    after["sk_inner"] = inner.recv(100).decode()
    g2.send(b"fresh")
    after["sk_fresh"] = inner.recv(100).decode()
after["pid"] = os.getpid()
with open(f"{d}/after.json.tmp", "w") as f:
    json.dump(after, f)
os.rename(f"{d}/after.json.tmp", f"{d}/after.json")
while True:
    time.sleep(1)
