# Two tasks of one tree talking over a loopback TCP connection: each sends
# numbered lines and checks that the other's arrive in order, none lost or
# repeated. usage: tcp_pair.py DIR [4|6]
#   SIGUSR1  stop reading (the other side's lines pile up in both queues)
#   SIGUSR2  read again
# Each side writes DIR/ROLE.status ("sent=N recv=M") and, on a wrong line,
# DIR/ROLE.error; DIR/ROLE.opts.before its socket options and addresses at
# start, DIR/ROLE.opts the same at each SIGUSR2. The listener stays open (a listening socket in the tree).
import os, select, signal, socket, struct, sys, time

d = sys.argv[1]
fam = socket.AF_INET6 if len(sys.argv) > 2 and sys.argv[2] == "6" else socket.AF_INET
host = "::1" if fam == socket.AF_INET6 else "127.0.0.1"
lst = socket.socket(fam, socket.SOCK_STREAM)
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind((host, 0))
lst.listen(4)
port = lst.getsockname()[1]
pid = os.fork()
if pid == 0:
    role = "client"
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect((host, port))
else:
    role = "server"
    s, _ = lst.accept()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 61)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 7)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 30000)
s.setblocking(False)


def options():
    g = s.getsockopt
    T = socket.IPPROTO_TCP
    return (
        f"nodelay={g(T, socket.TCP_NODELAY)} keepalive={g(socket.SOL_SOCKET, socket.SO_KEEPALIVE)} "
        f"keepidle={g(T, socket.TCP_KEEPIDLE)} keepintvl={g(T, socket.TCP_KEEPINTVL)} "
        f"keepcnt={g(T, socket.TCP_KEEPCNT)} linger={struct.unpack('ii', g(socket.SOL_SOCKET, socket.SO_LINGER, 8))[1]} "
        f"usertimeout={g(T, socket.TCP_USER_TIMEOUT)} name={s.getsockname()[1]} peer={s.getpeername()[1]}"
    )
paused = False


def pause(*_):
    global paused
    paused = True


def resume(*_):
    global paused
    paused = False
    put("opts", options())


signal.signal(signal.SIGUSR1, pause)
signal.signal(signal.SIGUSR2, resume)


def put(name, text):
    tmp = f"{d}/{role}.{name}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, f"{d}/{role}.{name}")


put("opts.before", options())
sent = recv = 0
out = bytearray()
inbuf = b""
last = 0.0
while True:
    while len(out) < 65536:
        out += b"%d\n" % sent
        sent += 1
    try:
        n = s.send(out)
        del out[:n]
    except BlockingIOError:
        pass
    except OSError as e:
        put("error", f"send: {e}")
        sys.exit(1)
    if not paused:
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    put("error", "end of file")
                    sys.exit(1)
                inbuf += chunk
        except BlockingIOError:
            pass
        except OSError as e:
            put("error", f"recv: {e}")
            sys.exit(1)
        lines = inbuf.split(b"\n")
        inbuf = lines.pop()
        for line in lines:
            if int(line) != recv:
                put("error", f"got {int(line)}, expected {recv}")
                sys.exit(1)
            recv += 1
    now = time.monotonic()
    if now - last > 0.05:
        # What was sent for real: lines handed to the kernel.
        queued = out.count(b"\n")
        put("status", f"sent={sent - queued} recv={recv} paused={int(paused)}")
        last = now
    select.select([s] if not paused else [], [s] if out else [], [], 0.02)
