# Objects whose path is gone, each checked by the program itself after a
# restore: `python3 deleted_paths.py MODE DIR`. Sets MODE up under DIR,
# writes DIR/before.json, waits for DIR/go, looks at what it holds, writes
# DIR/after.json (every check's result, compared by the test).
#   sockdir     sockets bound in directories deleted since (a listener with a
#               client waiting in accept(), a datagram socket with a queued
#               datagram and a client connected to it)
#   twolisteners two listeners bound to one path, the first one's socket file
#               renamed back over the second one's: the path is the first's
#   fifo        a FIFO in a directory, both deleted while two tasks hold its
#               ends and bytes are queued in it
#   cwd         a cwd whose directory (and its parent) was deleted, and an fd
#               on another deleted directory
#   ghostdir    a file deleted while open with its directory (and mapped)
#   rmsock      a listener whose socket file was removed, a connection it
#               accepted (the client in a child) and one waiting in accept()
#   abstract    accepted connections on abstract names, one whose listener
#               is open and one whose listener was closed since
#   creds       datagrams and stream bytes queued by other tasks (sent with
#               other uids and gids, one by a task that exited), read with
#               SO_PASSCRED
import json, os, socket, struct, sys, time

mode, d = sys.argv[1], sys.argv[2]
U, SOL = socket.AF_UNIX, socket.SOL_SOCKET
SO_PEEK_OFF = 42


def write(name, obj):
    with open(f"{d}/{name}.tmp", "w") as f:
        json.dump(obj, f)
    os.rename(f"{d}/{name}.tmp", f"{d}/{name}")


def wait_go():
    while not os.path.exists(f"{d}/go"):
        time.sleep(0.02)


def name_of(s):
    n = s.getsockname()
    return n.decode("latin-1") if isinstance(n, bytes) else n


def accept_within(s, t=2.0):
    s.settimeout(t)
    try:
        c, _ = s.accept()
        return c
    except OSError:
        return None


def creds_of(anc):
    for lvl, kind, data in anc:
        if lvl == SOL and kind == socket.SCM_CREDENTIALS:
            return list(struct.unpack("3i", data[:12]))
    return None


def sleep_forever():
    while True:
        time.sleep(1)


after = {}

if mode == "sockdir":
    os.makedirs(f"{d}/gone/sub")
    lpath, dpath = f"{d}/gone/sub/l.sock", f"{d}/gone/sub/d.sock"
    l = socket.socket(U, socket.SOCK_STREAM)
    l.bind(lpath)
    l.listen(4)
    waiting = socket.socket(U, socket.SOCK_STREAM)
    waiting.connect(lpath)
    ds = socket.socket(U, socket.SOCK_DGRAM)
    ds.bind(dpath)
    c = socket.socket(U, socket.SOCK_DGRAM)
    c.bind(f"{d}/c.sock")
    c.connect(dpath)
    c.send(b"queued-before")
    os.unlink(lpath)
    os.unlink(dpath)
    os.rmdir(f"{d}/gone/sub")
    os.rmdir(f"{d}/gone")
    write("before.json", {"pid": os.getpid(), "l": name_of(l), "d": name_of(ds)})
    wait_go()
    after["l"] = name_of(l)
    after["d"] = name_of(ds)
    after["c_peer"] = c.getpeername()
    after["gone_exists"] = os.path.lexists(f"{d}/gone")
    a = accept_within(l)
    waiting.send(b"waited")
    after["accepted"] = a.recv(100).decode() if a else None
    ds.settimeout(2)
    m, frm = ds.recvfrom(100)
    after["queued"] = [m.decode(), frm]
    c.send(b"sent-after")
    m, frm = ds.recvfrom(100)
    after["sent_after"] = [m.decode(), frm]

elif mode == "rmsock":
    path = f"{d}/s.sock"
    l = socket.socket(U, socket.SOCK_STREAM)
    l.bind(path)
    l.listen(4)
    child = os.fork()
    if child == 0:
        c = socket.socket(U, socket.SOCK_STREAM)
        c.connect(path)
        c.send(b"hello")
        while not os.path.exists(f"{d}/child-go"):
            time.sleep(0.02)
        c.send(b"after")
        c.settimeout(3)
        write("child.json", {"got": c.recv(100).decode(), "peer": c.getpeername()})
        sleep_forever()
    a = accept_within(l)
    first = a.recv(100).decode()
    waiting = socket.socket(U, socket.SOCK_STREAM)
    waiting.connect(path)
    os.unlink(path)
    write("before.json", {"pid": os.getpid(), "child": child, "first": first, "a": name_of(a)})
    wait_go()
    after["l"] = name_of(l)
    after["a"] = name_of(a)
    after["waiting_peer"] = waiting.getpeername()
    after["exists"] = os.path.lexists(path)
    try:
        socket.socket(U, socket.SOCK_STREAM).connect(path)
        after["new_connect"] = "ok"
    except OSError as e:
        after["new_connect"] = type(e).__name__
    open(f"{d}/child-go", "w").close()
    a.settimeout(3)
    after["from_child"] = a.recv(100).decode()
    a.send(b"reply")
    b = accept_within(l)
    waiting.send(b"waited")
    after["accepted"] = b.recv(100).decode() if b else None

elif mode == "abstract":
    name = b"\0ckpt-deleted-paths-" + str(os.getpid()).encode()
    l = socket.socket(U, socket.SOCK_STREAM)
    l.bind(name)
    l.listen(4)
    c = socket.socket(U, socket.SOCK_STREAM)
    c.connect(name)
    a = accept_within(l)
    c.send(b"queued")
    gname = name + b"-closed"
    gl = socket.socket(U, socket.SOCK_SEQPACKET)
    gl.bind(gname)
    gl.listen(4)
    gc = socket.socket(U, socket.SOCK_SEQPACKET)
    gc.connect(gname)
    ga = accept_within(gl)
    gl.close()
    waiting = socket.socket(U, socket.SOCK_STREAM)
    waiting.connect(name)
    names = lambda: [name_of(a), c.getpeername().decode("latin-1"), name_of(ga),
                     gc.getpeername().decode("latin-1")]
    write("before.json", {"pid": os.getpid(), "names": names()})
    wait_go()
    after["names"] = names()
    a.settimeout(3)
    after["a_got"] = a.recv(100).decode()
    a.send(b"x")
    c.settimeout(3)
    after["c_got"] = c.recv(100).decode()
    gc.send(b"g")
    ga.settimeout(3)
    after["ga_got"] = ga.recv(100).decode()
    b = accept_within(l)
    waiting.send(b"w")
    after["waiting"] = b.recv(10).decode() if b else None
    try:
        socket.socket(U, socket.SOCK_SEQPACKET).bind(gname)
        after["closed_name_free"] = True
    except OSError as e:
        after["closed_name_free"] = str(e)

elif mode == "twolisteners":
    path = f"{d}/s.sock"
    first = socket.socket(U, socket.SOCK_STREAM)
    first.bind(path)
    first.listen(4)
    os.rename(path, f"{d}/aside")
    second = socket.socket(U, socket.SOCK_STREAM)
    second.bind(path)
    second.listen(4)
    to_second = socket.socket(U, socket.SOCK_STREAM)
    to_second.connect(path)
    os.rename(f"{d}/aside", path)  # the path is the first's again
    to_first = socket.socket(U, socket.SOCK_STREAM)
    to_first.connect(path)
    write("before.json", {"pid": os.getpid(), "ino": os.stat(path).st_ino})
    wait_go()
    after["first"] = name_of(first)
    after["second"] = name_of(second)
    after["is_socket"] = os.path.exists(path) and (os.stat(path).st_mode & 0o170000) == 0o140000
    to_first.send(b"for-first")
    to_second.send(b"for-second")
    late = socket.socket(U, socket.SOCK_STREAM)
    try:
        late.connect(path)
        late.send(b"late")
        after["late_connect"] = "ok"
    except OSError as e:
        after["late_connect"] = type(e).__name__
    got_first = []
    while True:
        a = accept_within(first, 1.0)
        if not a:
            break
        got_first.append(a.recv(100).decode())
    got_second = []
    while True:
        a = accept_within(second, 0.3)
        if not a:
            break
        got_second.append(a.recv(100).decode())
    after["first_got"] = got_first
    after["second_got"] = got_second

elif mode == "fifo":
    os.makedirs(f"{d}/fd")
    path = f"{d}/fd/f"
    os.mkfifo(path, 0o640)
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    child = os.fork()
    if child == 0:
        w = os.open(path, os.O_WRONLY)
        os.write(w, b"queued|")
        while not os.path.exists(f"{d}/child-go"):
            time.sleep(0.02)
        os.write(w, b"after")
        write("child.json", {"link": os.readlink(f"/proc/self/fd/{w}")})
        sleep_forever()
    while not os.path.exists(f"/proc/{child}/fd/3"):
        time.sleep(0.02)
    time.sleep(0.2)
    os.unlink(path)
    os.rmdir(f"{d}/fd")
    write("before.json", {"pid": os.getpid(), "child": child})
    wait_go()
    after["link"] = os.readlink(f"/proc/self/fd/{r}")
    after["nlink"] = os.fstat(r).st_nlink
    after["dir_exists"] = os.path.lexists(f"{d}/fd")
    got = b""
    try:
        got = os.read(r, 100)
    except BlockingIOError:
        pass
    after["queued"] = got.decode()
    open(f"{d}/child-go", "w").close()
    end = time.time() + 3
    got = b""
    while time.time() < end and not got:
        try:
            got = os.read(r, 100)
        except BlockingIOError:
            time.sleep(0.02)
    after["from_child"] = got.decode()

elif mode == "cwd":
    os.makedirs(f"{d}/w/x")
    os.makedirs(f"{d}/w2")
    os.chmod(f"{d}/w/x", 0o751)
    dfd = os.open(f"{d}/w2", os.O_RDONLY | os.O_DIRECTORY)
    os.chdir(f"{d}/w/x")
    os.rmdir(f"{d}/w/x")
    os.rmdir(f"{d}/w")
    os.rmdir(f"{d}/w2")
    write("before.json", {"pid": os.getpid(), "top": os.stat(d).st_ino})
    wait_go()
    after["cwd_link"] = os.readlink("/proc/self/cwd")
    try:
        after["getcwd"] = os.getcwd()
    except OSError as e:
        after["getcwd"] = type(e).__name__
    st = os.stat(".")
    after["nlink"] = st.st_nlink
    after["mode"] = oct(st.st_mode & 0o7777)
    after["parent_nlink"] = os.stat("..").st_nlink
    after["grandparent_is_top"] = os.stat("../..").st_ino == os.stat(d).st_ino
    after["w_exists"] = os.path.lexists(f"{d}/w")
    after["w2_exists"] = os.path.lexists(f"{d}/w2")
    after["dfd_link"] = os.readlink(f"/proc/self/fd/{dfd}")
    after["dfd_entries"] = os.listdir(dfd)
    try:
        open("new-file", "w").close()
        after["create"] = "ok"
    except OSError as e:
        after["create"] = type(e).__name__

elif mode == "ghostdir":
    import mmap
    os.makedirs(f"{d}/g/h")
    fd = os.open(f"{d}/g/h/data", os.O_RDWR | os.O_CREAT, 0o640)
    os.write(fd, b"kept-content".ljust(4096, b"."))
    m = mmap.mmap(fd, 4096)
    os.unlink(f"{d}/g/h/data")
    os.rmdir(f"{d}/g/h")
    os.rmdir(f"{d}/g")
    write("before.json", {"pid": os.getpid()})
    wait_go()
    after["link"] = os.readlink(f"/proc/self/fd/{fd}")
    after["content"] = os.pread(fd, 12, 0).decode()
    after["mode"] = oct(os.fstat(fd).st_mode & 0o7777)
    m[0:4] = b"KEPT"
    after["shared"] = os.pread(fd, 4, 0).decode()
    after["g_exists"] = os.path.lexists(f"{d}/g")

elif mode == "creds":
    rpath = f"{d}/r.sock"
    r = socket.socket(U, socket.SOCK_DGRAM)
    r.bind(rpath)
    r.setsockopt(SOL, socket.SO_PASSCRED, 1)
    sa, sb = socket.socketpair(U, socket.SOCK_STREAM)
    sb.setsockopt(SOL, socket.SO_PASSCRED, 1)
    r.getsockname()
    # Sent by this task itself.
    x = socket.socket(U, socket.SOCK_DGRAM)
    x.sendto(b"from-self", rpath)
    sa.send(b"self-bytes|")
    # A child of other uids that stays (part of the tree).
    sync_r, sync_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(sync_r)
        y = socket.socket(U, socket.SOCK_DGRAM)
        as_other = [(SOL, socket.SCM_CREDENTIALS, struct.pack("3i", os.getpid(), 4321, 1234))]
        y.sendmsg([b"from-child"], as_other, 0, rpath)
        sa.sendmsg([b"child-bytes"], as_other)
        os.write(sync_w, b"x")
        os.close(sync_w)
        sleep_forever()
    os.close(sync_w)
    os.read(sync_r, 1)
    os.close(sync_r)
    # A child that sends and is gone (and reaped) before the dump.
    dead = os.fork()
    if dead == 0:
        z = socket.socket(U, socket.SOCK_DGRAM)
        as_other = [(SOL, socket.SCM_CREDENTIALS, struct.pack("3i", os.getpid(), 666, 555))]
        z.sendmsg([b"from-dead"], as_other, 0, rpath)
        os._exit(0)
    os.waitpid(dead, 0)
    # Queued while nobody asked for credentials: it carries none.
    r.setsockopt(SOL, socket.SO_PASSCRED, 0)
    x.sendto(b"no-creds", rpath)
    r.setsockopt(SOL, socket.SO_PASSCRED, 1)

    def drain(peek):
        out = []
        r.settimeout(0.5)
        flags = socket.MSG_PEEK if peek else 0
        if peek:
            r.setsockopt(SOL, SO_PEEK_OFF, 0)
        for _ in range(4):
            try:
                m, anc, _, _ = r.recvmsg(100, 256, flags)
            except OSError:
                break
            out.append([m.decode(), creds_of(anc)])
        if peek:
            r.setsockopt(SOL, SO_PEEK_OFF, -1)
        return out

    def stream():
        out = []
        sb.settimeout(0.5)
        for _ in range(2):
            try:
                m, anc, _, _ = sb.recvmsg(100, 256)
            except OSError:
                break
            out.append([m.decode(), creds_of(anc)])
        return out

    expect = drain(True)
    write("before.json", {"pid": os.getpid(), "child": child, "dead": dead, "dgrams": expect})
    wait_go()
    after["dgrams"] = drain(False)
    after["stream"] = stream()

write("after.json", after)
sleep_forever()
