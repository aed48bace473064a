/* Seccomp, checked by the sandboxed processes themselves.
 * usage: seccomp LOG
 * The root R forks two children:
 *   C, sandboxed with filters: no_new_privs; its main thread installs F1
 *     (uname fails with EACCES, sysinfo kills the process); thread T1
 *     installs F2 on top for itself (getcwd fails with EPERM), then creates
 *     T2, which shares F1 and F2 with it. On SIGUSR1 each thread logs
 *     "report NAME uname=ERRNO getcwd=ERRNO filters=N nnp=N"; on SIGUSR2 T2
 *     installs F3 (getpriority fails with E2BIG) with TSYNC — which succeeds
 *     only if every other thread's filters are ancestors of its own, i.e. if
 *     T1 and T2 still share F2 — and the main thread then logs what
 *     getpriority gives it; on SIGHUP the main thread calls sysinfo.
 *   S, in SECCOMP_MODE_STRICT: answers each byte R writes to it with the
 *     byte + 1; on 'k' it calls getpid, which strict mode kills.
 * R: SIGUSR1 → writes 'p' to S and logs "strict echo X"; SIGUSR2 → writes 'k'.
 * R logs "died NAME sig=N" when a child dies. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int log_fd;
static volatile sig_atomic_t want_report, want_tsync, want_die;
static volatile int gen, tsync_done;

static void on_usr1(int s) { (void)s; want_report = 1; }
static void on_usr2(int s) { (void)s; want_tsync = 1; }
static void on_hup(int s) { (void)s; want_die = 1; }

static void nap(long ms) {
  struct timespec ts = {0, ms * 1000000L};
  nanosleep(&ts, 0);
}

static long install(int nr, unsigned action, unsigned flags) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, action),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {4, f};
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static int err_of(long r) { return r < 0 ? errno : 0; }

static void report(const char *name) {
  struct utsname u;
  int e1 = err_of(uname(&u));
  char cwd[256];
  int e2 = getcwd(cwd, sizeof cwd) ? 0 : errno;
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/self/task/%ld/status", (long)syscall(SYS_gettid));
  int fd = open(path, O_RDONLY);
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  buf[n > 0 ? n : 0] = 0;
  char *f = strstr(buf, "Seccomp_filters:"), *p = strstr(buf, "NoNewPrivs:");
  dprintf(log_fd, "report %s uname=%d getcwd=%d filters=%d nnp=%d\n", name, e1, e2, f ? atoi(f + 16) : -1,
          p ? atoi(p + 11) : -1);
}

static void *t2_main(void *arg) {
  (void)arg;
  int seen = 0;
  for (;;) {
    if (gen != seen) {
      seen = gen;
      report("t2");
    }
    if (want_tsync && !tsync_done) {
      long r = install(SYS_getpriority, SECCOMP_RET_ERRNO | E2BIG, SECCOMP_FILTER_FLAG_TSYNC);
      dprintf(log_fd, "tsync r=%ld errno=%d\n", r, r < 0 ? errno : 0);
      tsync_done = 1;
    }
    nap(5);
  }
  return 0;
}

static void *t1_main(void *arg) {
  (void)arg;
  if (install(SYS_getcwd, SECCOMP_RET_ERRNO | EPERM, 0)) _exit(11);
  pthread_t t;
  pthread_create(&t, 0, t2_main, 0);
  int seen = 0;
  for (;;) {
    if (gen != seen) {
      seen = gen;
      report("t1");
    }
    nap(5);
  }
  return 0;
}

static void sandboxed(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, 0); /* the threads leave signals to main */
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  if (install(SYS_uname, SECCOMP_RET_ERRNO | EACCES, 0)) _exit(10);
  if (install(SYS_sysinfo, SECCOMP_RET_KILL_PROCESS, 0)) _exit(12);
  pthread_t t;
  pthread_create(&t, 0, t1_main, 0);
  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  signal(SIGHUP, on_hup);
  pthread_sigmask(SIG_UNBLOCK, &set, 0);
  int reported_prio = 0;
  for (;;) {
    if (want_report) {
      want_report = 0;
      report("main");
      gen++;
    }
    if (tsync_done && !reported_prio) {
      reported_prio = 1;
      errno = 0;
      getpriority(PRIO_PROCESS, 0);
      dprintf(log_fd, "getpriority main errno=%d\n", errno);
    }
    if (want_die) syscall(SYS_sysinfo, 0);
    nap(5);
  }
}

static void strict(int in, int out) {
  prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT);
  for (;;) {
    char c;
    if (syscall(SYS_read, in, &c, 1) != 1) syscall(SYS_exit, 1);
    if (c == 'k') syscall(SYS_getpid);
    c++;
    syscall(SYS_write, out, &c, 1);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
  pid_t c = fork();
  if (c == 0) sandboxed();
  int to_s[2], from_s[2];
  if (pipe(to_s) || pipe(from_s)) return 3;
  pid_t s = fork();
  if (s == 0) {
    close(to_s[1]);
    close(from_s[0]);
    strict(to_s[0], from_s[1]);
  }
  close(to_s[0]);
  close(from_s[1]);
  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  dprintf(log_fd, "ready root=%d sandboxed=%d strict=%d\n", getpid(), c, s);
  for (;;) {
    if (want_report) {
      want_report = 0;
      char b = 'p';
      if (write(to_s[1], &b, 1) == 1 && read(from_s[0], &b, 1) == 1) dprintf(log_fd, "strict echo %c\n", b);
    }
    if (want_tsync) {
      want_tsync = 0;
      char b = 'k';
      if (write(to_s[1], &b, 1) != 1) dprintf(log_fd, "strict write failed\n");
    }
    int st;
    pid_t r = waitpid(-1, &st, WNOHANG);
    if (r > 0) dprintf(log_fd, "died %s sig=%d\n", r == c ? "sandboxed" : "strict", WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    nap(5);
  }
}
