# Restores a dump with a fresh socketpair end in place of socket ID
# (--inherit-fd), then talks to the restored process on the other end.
# Prints {"code", "stderr", "reply"} as one JSON line.
import json, socket, subprocess, sys

ckpt, images, ino = sys.argv[1], sys.argv[2], sys.argv[3]
mine, theirs = socket.socketpair()
n = theirs.fileno()
r = subprocess.run([ckpt, "restore", "-D", images, "-d", "--inherit-fd", f"fd[{n}]:socket:[{ino}]"],
                   pass_fds=[n], capture_output=True, text=True)
theirs.close()
reply = None
if r.returncode == 0:
    mine.settimeout(5)
    mine.send(b"ping")
    reply = mine.recv(100).decode()
print(json.dumps({"code": r.returncode, "stderr": r.stderr, "reply": reply}), flush=True)
