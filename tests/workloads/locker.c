/* Holds one lock of each kind on files in DIR:
 *   DIR/flock  flock(LOCK_EX)
 *   DIR/posix  fcntl(F_SETLK) write lock on bytes 100..199, read lock from 300 to the end;
 *              also mapped shared (restore maps it through an fd of its own, whose
 *              close must not drop the process's locks on it)
 *   DIR/ofd    fcntl(F_OFD_SETLK) write lock on bytes 0..9
 *   DIR/shared flock(LOCK_SH), through a description a forked child shares
 * then logs "ready" and sleeps. SIGUSR1 makes it check through a second open
 * file description of DIR/ofd (F_OFD_GETLK) that its OFD lock is still in
 * force, and append "held pid=P ofd=taken|free" to DIR/log.
 * usage: locker DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t want_report;
static void on_usr1(int s) { (void)s; want_report = 1; }

static int open_in(const char *dir, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_RDWR | O_CREAT, 0600);
  if (fd < 0) _exit(3);
  return fd;
}

static int lock(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return fcntl(fd, cmd, &fl);
}

/* What a lock request of this process would meet: F_UNLCK if nothing else
 * holds a conflicting lock. */
static const char *probe(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  if (fcntl(fd, cmd, &fl) < 0) return "error";
  return fl.l_type == F_UNLCK ? "free" : "taken";
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *dir = argv[1];
  int log_fd = open_in(dir, "log");
  int f_flock = open_in(dir, "flock");
  int f_posix = open_in(dir, "posix");
  int f_ofd = open_in(dir, "ofd");
  int f_shared = open_in(dir, "shared");
  if (flock(f_flock, LOCK_EX | LOCK_NB)) return 4;
  if (ftruncate(f_posix, 4096)) return 5;
  volatile char *map = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, f_posix, 0);
  if (map == MAP_FAILED) return 5;
  map[0] = 'x';
  if (lock(f_posix, F_SETLK, F_WRLCK, 100, 100)) return 5;
  if (lock(f_posix, F_SETLK, F_RDLCK, 300, 0)) return 6;
  if (lock(f_ofd, F_OFD_SETLK, F_WRLCK, 0, 10)) return 7;
  if (flock(f_shared, LOCK_SH | LOCK_NB)) return 8;
  signal(SIGUSR1, on_usr1);
  pid_t child = fork();
  if (child == 0) {
    for (;;) pause(); /* shares f_shared's description, takes no lock of its own */
  }
  dprintf(log_fd, "ready pid=%d child=%d\n", getpid(), child);
  for (;;) {
    pause();
    if (want_report) {
      want_report = 0;
      /* Another description of our own conflicts with our OFD lock. */
      int again = open_in(dir, "ofd");
      dprintf(log_fd, "held pid=%d ofd=%s\n", getpid(), probe(again, F_OFD_GETLK, F_WRLCK, 0, 10));
      close(again);
    }
  }
}
