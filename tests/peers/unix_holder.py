# Holds one socket of each interesting kind for tests/unix_diag_test.ts and
# prints their descriptor numbers as one JSON line.
import json, os, signal, socket, sys

d, abstract = sys.argv[1], sys.argv[2]
lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lst.bind(f"{d}/listen.sock")
lst.listen(5)
waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
waiting.connect(f"{d}/listen.sock")  # stays in the accept queue
ab = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
ab.bind("\0" + abstract)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
a.send(b"12345")
a.shutdown(socket.SHUT_WR)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
srv.bind(f"{d}/gone.sock")
orphan = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
orphan.connect(f"{d}/gone.sock")
srv.close()
print(json.dumps({"listen": lst.fileno(), "waiting": waiting.fileno(), "abstract": ab.fileno(),
                  "a": a.fileno(), "b": b.fileno(), "orphan": orphan.fileno()}), flush=True)
signal.pause()
