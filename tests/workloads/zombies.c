/* Zombies as real trees leave them, checked by the processes themselves.
 * usage: zombies LOG
 * The root keeps three zombie children: one that led its own process group
 * and exited 7 (named "zexit7"), one killed by SIGSEGV ("zsegv"), one that
 * made its own session and exited 3 ("zsession"). A child "waiter" keeps a
 * zombie of its own ("zinner", exit 5). Each zombie is described in LOG as
 * "zombie NAME pid=.. pgid=.. sid=.. comm=.." when all exist. On SIGUSR1 the
 * root and the waiter each describe their zombies again from /proc, reap them
 * with waitpid and log "reaped NAME status=0x.." — the test compares. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }
static int log_fd;

static void describe(const char *name, pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
  if (fd >= 0) close(fd);
  if (n <= 0) {
    dprintf(log_fd, "zombie %s pid=%d missing\n", name, pid);
    return;
  }
  buf[n] = 0;
  char *open_p = strchr(buf, '('), *close_p = strrchr(buf, ')');
  *close_p = 0;
  char state;
  int ppid, pgid, sid;
  sscanf(close_p + 2, "%c %d %d %d", &state, &ppid, &pgid, &sid);
  dprintf(log_fd, "zombie %s pid=%d state=%c ppid=%d pgid=%d sid=%d comm=%s\n", name, pid, state, ppid,
          pgid, sid, open_p + 1);
}

static void reap(const char *name, pid_t pid) {
  int st = 0;
  pid_t r = waitpid(pid, &st, 0);
  dprintf(log_fd, "reaped %s pid=%d r=%d status=0x%x\n", name, pid, r, st);
}

static pid_t zombie(const char *name, int how) {
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_NAME, name);
    if (how == 1) {
      setpgid(0, 0);
      _exit(7);
    }
    if (how == 2) {
      struct rlimit no = {0, 0};
      setrlimit(RLIMIT_CORE, &no);
      signal(SIGSEGV, SIG_DFL);
      raise(SIGSEGV);
    }
    if (how == 3) {
      setsid();
      _exit(3);
    }
    _exit(5);
  }
  return pid;
}

static void settle(void) {
  struct timespec ts = {0, 200 * 1000000L};
  nanosleep(&ts, 0);
}

static void wait_go(void) {
  while (!go) {
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, 0);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
  signal(SIGUSR1, on_usr1);
  pid_t waiter = fork();
  if (waiter == 0) {
    pid_t inner = zombie("zinner", 0);
    settle();
    describe("zinner", inner);
    wait_go();
    describe("zinner", inner);
    reap("zinner", inner);
    for (;;) pause();
  }
  pid_t z1 = zombie("zexit7", 1), z2 = zombie("zsegv", 2), z3 = zombie("zsession", 3);
  settle();
  describe("zexit7", z1);
  describe("zsegv", z2);
  describe("zsession", z3);
  dprintf(log_fd, "ready root=%d waiter=%d\n", getpid(), waiter);
  wait_go();
  describe("zexit7", z1);
  describe("zsegv", z2);
  describe("zsession", z3);
  reap("zexit7", z1);
  reap("zsegv", z2);
  reap("zsession", z3);
  dprintf(log_fd, "done\n");
  for (;;) pause();
}
