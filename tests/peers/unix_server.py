# An outside UNIX server for tests/unix_external_test.ts: TYPE (stream,
# seqpacket or dgram) at PATH; appends every message it receives to LOG as
# "CONN DATA" lines (CONN counts accepted connections; 0 for dgram).
import os, socket, sys, threading

kind, path, log = sys.argv[1], sys.argv[2], sys.argv[3]
T = {"stream": socket.SOCK_STREAM, "seqpacket": socket.SOCK_SEQPACKET, "dgram": socket.SOCK_DGRAM}[kind]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
srv = socket.socket(socket.AF_UNIX, T)
srv.bind(path)
lock = threading.Lock()

def note(conn, data):
    with lock, open(log, "a") as f:
        for m in (data.decode().split("\n") if T == socket.SOCK_STREAM else [data.decode()]):
            if m:
                f.write(f"{conn} {m}\n")

def serve(conn, n):
    while True:
        data = conn.recv(4096)
        if not data:
            return
        note(n, data)

if T == socket.SOCK_DGRAM:
    open(log, "a").close()
    while True:
        note(0, srv.recv(4096))
srv.listen(8)
open(log, "a").close()
n = 0
while True:
    c, _ = srv.accept()
    n += 1
    threading.Thread(target=serve, args=(c, n), daemon=True).start()
