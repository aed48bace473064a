# A half-closed loopback TCP connection inside one tree. usage:
#   tcp_half.py DIR client-first|server-first
# client-first: the client sends a request and shuts down its sending side;
#   the server reads nothing until DIR/go exists (the request and the FIN
#   wait unread: CLOSE_WAIT against FIN_WAIT2), then reads it all to end of
#   file, answers and closes; the client reads the answer to end of file.
# server-first: the server sends a greeting and shuts down its side at once;
#   the client reads nothing until DIR/go, then reads the greeting to end of
#   file, sends its request and shuts down; the server reads it to the end.
# Each side writes DIR/ROLE.done: "ok BYTES SHA256" of what it read, or
# "error ...". DIR/ready appears once the connection is half-closed.
import hashlib, os, socket, sys, time

d, mode = sys.argv[1], sys.argv[2]
REQUEST = b"".join(b"request line %d\n" % i for i in range(3000))
ANSWER = b"".join(b"answer line %d\n" % i for i in range(5000))


def put(name, text):
    with open(f"{d}/{name}.tmp", "w") as f:
        f.write(text)
    os.rename(f"{d}/{name}.tmp", f"{d}/{name}")


def wait_go():
    while not os.path.exists(f"{d}/go"):
        time.sleep(0.01)


def read_all(s):
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def done(role, data):
    put(f"{role}.done", f"ok {len(data)} {hashlib.sha256(data).hexdigest()}")


lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen(1)
port = lst.getsockname()[1]
if os.fork() == 0:
    role = "client"
    try:
        s = socket.socket()
        s.connect(("127.0.0.1", port))
        if mode == "client-first":
            s.sendall(REQUEST)
            s.shutdown(socket.SHUT_WR)
            done(role, read_all(s))
        else:
            wait_go()
            greeting = read_all(s)
            s.sendall(REQUEST)
            s.shutdown(socket.SHUT_WR)
            done(role, greeting)
    except Exception as e:
        put(f"{role}.done", f"error {e!r}")
    sys.exit(0)
role = "server"
try:
    s, _ = lst.accept()
    if mode == "client-first":
        time.sleep(0.2)
        put("ready", "1")
        wait_go()
        req = read_all(s)
        s.sendall(ANSWER)
        s.close()
        done(role, req)
    else:
        s.sendall(ANSWER)
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.2)
        put("ready", "1")
        done(role, read_all(s))
except Exception as e:
    put(f"{role}.done", f"error {e!r}")
while True:
    time.sleep(1)
