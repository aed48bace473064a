# The world outside a dumped tree, for tests/sockets_test.ts: a datagram
# server, a stream server that accepts, one that never accepts, and one end
# of a socketpair whose other end it hands to the tree it starts
# (unix_tree.py). Prints one JSON line with the inodes, then serves forever.
import json, os, socket, subprocess, sys, threading

d = sys.argv[1]
dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
dg.bind(f"{d}/dgram.sock")
st = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
st.bind(f"{d}/stream.sock")
st.listen(8)
lazy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lazy.bind(f"{d}/lazy.sock")
lazy.listen(8)
mine, theirs = socket.socketpair()

accepted = []
def serve():
    while True:
        accepted.append(st.accept()[0])
threading.Thread(target=serve, daemon=True).start()

tree = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "unix_tree.py"),
                         d, str(theirs.fileno())], pass_fds=[theirs.fileno()])
theirs.close()
ino = lambda s: os.fstat(s.fileno()).st_ino
print(json.dumps({"pid": os.getpid(), "tree": tree.pid, "dgram": ino(dg), "listener": ino(st),
                  "lazy": ino(lazy), "pair": ino(mine)}), flush=True)
tree.wait()
