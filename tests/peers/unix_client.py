# A client the tests dump: a TYPE socket connected to PATH, sending "N" every
# 30 ms (a line for stream). It writes {"pid","fd","ino"} to STATE once, and
# appends "sent N" or "error NAME" to LOG, so the test sees what the restored
# process experiences.
import json, os, socket, sys, time

kind, path, state, log = sys.argv[1:5]
T = {"stream": socket.SOCK_STREAM, "seqpacket": socket.SOCK_SEQPACKET, "dgram": socket.SOCK_DGRAM}[kind]
s = socket.socket(socket.AF_UNIX, T)
s.connect(path)
with open(state + ".tmp", "w") as f:
    json.dump({"pid": os.getpid(), "fd": s.fileno(), "ino": os.fstat(s.fileno()).st_ino}, f)
os.rename(state + ".tmp", state)
n = 0
last = None
while True:
    n += 1
    try:
        s.send(f"{n}\n".encode() if T == socket.SOCK_STREAM else str(n).encode())
        out = f"sent {n}"
    except OSError as e:
        out = f"error {type(e).__name__}"
    if out != last or out.startswith("sent"):
        with open(log, "a") as f:
            f.write(out + "\n")
    last = out
    time.sleep(0.03)
