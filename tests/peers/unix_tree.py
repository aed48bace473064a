# A tree to inspect with 'ckpt sockets': a socketpair shared with a forked
# child (peer inside), clients of the servers unix_outside.py runs, a
# socketpair end from it, and a datagram client whose server closed (gone).
import json, os, signal, socket, sys, time

d, inherited = sys.argv[1], int(sys.argv[2])
a, b = socket.socketpair()
child = os.fork()
if child == 0:
    a.close()
    signal.pause()
    os._exit(0)
b.close()

dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
dg.connect(f"{d}/dgram.sock")
st = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
st.connect(f"{d}/stream.sock")
lazy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lazy.connect(f"{d}/lazy.sock")
ext = socket.socket(fileno=inherited)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
srv.bind(f"{d}/gone.sock")
orphan = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
orphan.connect(f"{d}/gone.sock")
srv.close()
own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
own.bind(f"{d}/tree.sock")
own.listen(4)  # never accepts: the test connects from outside
half, closed = socket.socketpair()
closed.close()
dg.send(b"hello")  # queued at the server, which never reads

# The accept thread of the outside server may still be running.
while not os.path.exists(f"/proc/{child}"):
    time.sleep(0.01)
out = {"pid": os.getpid(), "child": child}
for k, s in {"pair": a, "dgram": dg, "stream": st, "lazy": lazy, "ext": ext,
             "orphan": orphan, "half": half, "own": own}.items():
    out[k] = {"fd": s.fileno(), "ino": os.fstat(s.fileno()).st_ino}
print(json.dumps(out), flush=True)
signal.pause()
