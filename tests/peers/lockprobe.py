# A process outside the dumped tree that tries the locks tests/workloads/locker.c
# holds, for tests/locks_test.ts.
#   lockprobe.py probe DIR   tries to take each lock (non-blocking) and lets it go
#                            again; prints one JSON object: probe name -> "free"|"held"
#   lockprobe.py hold DIR KIND  takes one lock (flock: DIR/flock LOCK_EX; ofd: DIR/ofd
#                            bytes 0..9 for writing), prints {"pid": PID} and sleeps
import errno, fcntl, json, os, struct, sys, time

mode, d = sys.argv[1], sys.argv[2]


def rng(kind, fd, write, start, length):
    cmd = fcntl.F_OFD_SETLK if kind == "ofd" else fcntl.F_SETLK
    t = fcntl.F_WRLCK if write else fcntl.F_RDLCK
    fcntl.fcntl(fd, cmd, struct.pack("hhqqi4x", t, 0, start, length, 0))


def unlock(kind, fd, start, length):
    cmd = fcntl.F_OFD_SETLK if kind == "ofd" else fcntl.F_SETLK
    fcntl.fcntl(fd, cmd, struct.pack("hhqqi4x", fcntl.F_UNLCK, 0, start, length, 0))


def attempt(fn):
    try:
        fn()
        return "free"
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return "held"
        raise


def fd_of(name):
    return os.open(f"{d}/{name}", os.O_RDWR)


if mode == "probe":
    out = {}

    def flock(name, how):
        fd = fd_of(name)
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def byte_range(kind, name, write, start, length):
        fd = fd_of(name)
        try:
            rng(kind, fd, write, start, length)
            unlock(kind, fd, start, length)
        finally:
            os.close(fd)

    out["flock_ex"] = attempt(lambda: flock("flock", fcntl.LOCK_EX))
    out["flock_sh"] = attempt(lambda: flock("flock", fcntl.LOCK_SH))
    out["shared_ex"] = attempt(lambda: flock("shared", fcntl.LOCK_EX))
    out["shared_sh"] = attempt(lambda: flock("shared", fcntl.LOCK_SH))
    out["posix_w150"] = attempt(lambda: byte_range("posix", "posix", True, 150, 1))
    out["posix_r150"] = attempt(lambda: byte_range("posix", "posix", False, 150, 1))
    out["posix_w250"] = attempt(lambda: byte_range("posix", "posix", True, 250, 1))
    out["posix_w400"] = attempt(lambda: byte_range("posix", "posix", True, 400, 1))
    out["posix_r400"] = attempt(lambda: byte_range("posix", "posix", False, 400, 1))
    out["ofd_w5"] = attempt(lambda: byte_range("ofd", "ofd", True, 5, 1))
    out["ofd_w20"] = attempt(lambda: byte_range("ofd", "ofd", True, 20, 1))
    print(json.dumps(out), flush=True)
elif mode == "hold":
    kind = sys.argv[3]
    if kind == "flock":
        fd = fd_of("flock")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        fd = fd_of("ofd")
        rng("ofd", fd, True, 0, 10)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    time.sleep(120)
