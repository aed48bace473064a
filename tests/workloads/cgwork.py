# A tree for the cgroup tests: the root, one extra thread and one child, all
# idle; what they are allowed to do is asked by signal. usage:
# cgwork.py DIR [nothread]; reports to DIR/log.
#   SIGUSR1  the root tries to fork (a pids.max reached refuses it: EAGAIN)
#   SIGUSR2  the root tries to make a cgroup below its own cgroup v2 cgroup
#            (cgroup.max.descendants reached refuses it: EAGAIN)
#   SIGHUP   the root logs a checksum of 8 MiB it filled at start
import hashlib, os, signal, sys, threading, time

d = sys.argv[1]
blob = bytearray(os.urandom(1 << 16) * 128)  # 8 MiB the restore must bring back


def log(s):
    with open(f"{d}/log", "a") as f:
        f.write(f"{s}\n")


def try_fork(*_):
    try:
        pid = os.fork()
    except OSError as e:
        log(f"fork {os.strerror(e.errno)}")
        return
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    log("fork ok")


def try_mkdir(*_):
    own = [l for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")][0][3:]
    path = f"/sys/fs/cgroup/unified{own}/probe"
    try:
        os.mkdir(path)
        os.rmdir(path)
        log("mkdir ok")
    except OSError as e:
        log(f"mkdir {os.strerror(e.errno)}")


def checksum(*_):
    log(f"sum {hashlib.sha256(blob).hexdigest()}")


SIGS = {signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP}


def idle():
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGS)  # the root's main thread takes them
    while True:
        time.sleep(3600)


t = threading.Thread(target=idle, daemon=True)
if len(sys.argv) <= 2:
    t.start()
    time.sleep(0.05)
child = os.fork()
if child == 0:
    idle()
signal.signal(signal.SIGUSR1, try_fork)
signal.signal(signal.SIGUSR2, try_mkdir)
signal.signal(signal.SIGHUP, checksum)
log(f"start root={os.getpid()} thread={t.native_id or 0} child={child}")
while True:
    time.sleep(0.05)
