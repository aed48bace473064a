# Memory that changes between a pre-dump and the dump in every way write
# tracking must see. usage: dirtier.py DIR MIB (MIB >= 64); reports to DIR/log.
#   SIGUSR1  write a new generation into every 7th page, and 3 pages by read(2)
#   SIGUSR2  MADV_DONTNEED pages 1024..1279 (they must read as zeros after)
#   SIGHUP   log this process's memory checksum
#   SIGWINCH close every fd above stdio (the tracking fd with them)
#   SIGURG   fork a child that keeps a copy of the memory
import ctypes, hashlib, mmap, os, signal, sys, time

d, mib = sys.argv[1], int(sys.argv[2])
size = mib << 20
pages = size // 4096
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(pages):
    m[i * 4096:i * 4096 + 8] = i.to_bytes(8, "little")
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
libc = ctypes.CDLL(None, use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
gen = 0


def log(s):
    with open(f"{d}/log", "a") as f:
        f.write(f"{s}\n")


def write_some(*_):
    global gen
    gen += 1
    g = gen.to_bytes(8, "little")
    for i in range(0, pages, 7):
        m[i * 4096 + 8:i * 4096 + 16] = g
    r, w = os.pipe()
    os.write(w, g * (3 * 512))
    os.close(w)
    os.readv(r, [memoryview(m)[8002 * 4096:8005 * 4096]])
    os.close(r)
    log(f"wrote pid={os.getpid()} gen={gen}")


def discard(*_):
    libc.madvise(addr + 1024 * 4096, 256 * 4096, 4)
    log(f"discarded pid={os.getpid()}")


def checksum(*_):
    log(f"sum pid={os.getpid()} gen={gen} {hashlib.sha256(m).hexdigest()}")


def close_fds(*_):
    os.closerange(3, 65536)
    log(f"closed pid={os.getpid()}")


def fork(*_):
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGURG, signal.SIG_IGN)
        return
    log(f"forked pid={os.getpid()} child={child}")


signal.signal(signal.SIGUSR1, write_some)
signal.signal(signal.SIGUSR2, discard)
signal.signal(signal.SIGHUP, checksum)
signal.signal(signal.SIGWINCH, close_fds)
signal.signal(signal.SIGURG, fork)
log(f"ready pid={os.getpid()}")
while True:
    time.sleep(0.02)
