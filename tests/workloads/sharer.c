/* sharer DIR: a parent and a child made with clone(CLONE_FILES | CLONE_FS).
 * On SIGUSR1 the parent opens a new fd and chdirs to DIR/sub; the child,
 * polling a shared word, checks that it sees that fd and that cwd — which it
 * can only if the fd table and fs info are still shared — and logs both. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile int *shared;
static char dir[4096];
static volatile sig_atomic_t poke;
static void on_usr1(int s) { (void)s; poke = 1; }

static void nap(void) {
  struct timespec ts = {0, 10 * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {}
}

static int child_main(void *arg) {
  (void)arg;
  char path[4200];
  snprintf(path, sizeof path, "%s/child.log", dir);
  int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  dprintf(log, "child pid=%d\n", getpid());
  for (;;) {
    int fd = shared[0];
    if (fd > 0 && !shared[1]) {
      char cwd[4200];
      if (!getcwd(cwd, sizeof cwd)) cwd[0] = 0;
      dprintf(log, "fd=%d fdok=%d cwd=%s\n", fd, fcntl(fd, F_GETFD) >= 0, cwd);
      shared[1] = 1;
    }
    nap();
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  snprintf(dir, sizeof dir, "%s", argv[1]);
  char path[4200];
  snprintf(path, sizeof path, "%s/sub", dir);
  mkdir(path, 0700);
  shared = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  char *stack = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  signal(SIGUSR1, on_usr1);
  pid_t c = clone(child_main, stack + (1 << 20), CLONE_FILES | CLONE_FS | SIGCHLD, 0);
  snprintf(path, sizeof path, "%s/parent.log", dir);
  int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  dprintf(log, "start parent=%d child=%d\n", getpid(), c);
  for (;;) {
    if (poke) {
      poke = 0;
      snprintf(path, sizeof path, "%s/marker", dir);
      int fd = open(path, O_RDONLY | O_CREAT, 0600);
      snprintf(path, sizeof path, "%s/sub", dir);
      if (chdir(path) != 0) return 3;
      shared[1] = 0;
      shared[0] = fd;
    }
    nap();
  }
}
