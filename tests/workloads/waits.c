/* Timed waits that a checkpoint interrupts, judged by the program itself.
 * usage: waits LOG MS
 * One thread per kind of wait, each with a timeout of MS milliseconds that
 * nothing ends early: poll, ppoll, select, nanosleep without rem, relative
 * clock_nanosleep with rem, FUTEX_WAIT, sigtimedwait, epoll_wait, epoll_pwait
 * (on an epoll watching a pipe nothing writes to); plus poll with no
 * timeout on a pipe that gets a byte on SIGUSR1. A heartbeat thread ticks every
 * 2 ms and adds up the gaps it did not run for (the time the process was
 * frozen or did not exist), noting when the last one ended. Each waiter logs
 * "begin NAME tid=TID" and, when its call returns, "done NAME ret=R errno=E
 * elapsed=MS lived=MS since=MS": lived is elapsed less the gaps, i.e. the
 * time the program lived through — what its timeout measures had no
 * checkpoint happened —, since the time from the end of the last gap. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int log_fd, ms, wake[2];
static _Atomic int64_t gaps_ns, gap_end_ns;
static volatile sig_atomic_t want_wake;
static void on_usr1(int s) { (void)s; want_wake = 1; }

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void *heartbeat(void *a) {
  (void)a;
  int64_t prev = now_ns();
  for (;;) {
    struct timespec ts = {0, 2 * 1000000L};
    nanosleep(&ts, 0);
    int64_t t = now_ns(), d = t - prev;
    /* Only the checkpoint's gap (the test keeps it over half a second):
     * a loaded machine's scheduling delays are time the program lived. */
    if (d > 250 * 1000000LL) {
      gaps_ns += d - 2 * 1000000LL;
      gap_end_ns = t;
    }
    prev = t;
    if (want_wake) {
      want_wake = 0;
      if (write(wake[1], "x", 1) != 1) _exit(9);
    }
  }
  return 0;
}

static void done(const char *name, long ret, int err, int64_t t0, int64_t g0) {
  int64_t t = now_ns(), elapsed = t - t0, lived = elapsed - (gaps_ns - g0);
  int64_t since = gap_end_ns ? t - gap_end_ns : elapsed;
  dprintf(log_fd, "done %s ret=%ld errno=%d elapsed=%lld lived=%lld since=%lld\n", name, ret, err,
          (long long)(elapsed / 1000000), (long long)(lived / 1000000), (long long)(since / 1000000));
}

#define WAITER(NAME, CALL)                       \
  static void *NAME(void *a) {                   \
    (void)a;                                     \
    dprintf(log_fd, "begin %s tid=%ld\n", #NAME, (long)syscall(SYS_gettid)); \
    int64_t t0 = now_ns(), g0 = gaps_ns;         \
    errno = 0;                                   \
    long r = (CALL);                             \
    done(#NAME, r, r < 0 ? errno : 0, t0, g0);   \
    return 0;                                    \
  }

static int never[2], ep;
static uint32_t futex_word;

WAITER(w_poll, ({ struct pollfd p = {never[0], POLLIN, 0}; poll(&p, 1, ms); }))
WAITER(w_ppoll, ({ struct pollfd p = {never[0], POLLIN, 0}; struct timespec t = {ms / 1000, (ms % 1000) * 1000000L}; ppoll(&p, 1, &t, 0); }))
WAITER(w_select, ({ fd_set s; FD_ZERO(&s); FD_SET(never[0], &s); struct timeval t = {ms / 1000, (ms % 1000) * 1000}; select(never[0] + 1, &s, 0, 0, &t); }))
WAITER(w_nanosleep, ({ struct timespec t = {ms / 1000, (ms % 1000) * 1000000L}; syscall(SYS_nanosleep, &t, 0); }))
WAITER(w_clock_nanosleep, ({ struct timespec t = {ms / 1000, (ms % 1000) * 1000000L}, rem; int e = clock_nanosleep(CLOCK_MONOTONIC, 0, &t, &rem); e ? (errno = e, -1L) : 0L; }))
WAITER(w_futex, ({ struct timespec t = {ms / 1000, (ms % 1000) * 1000000L}; syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, &t, 0, 0); }))
WAITER(w_sigtimedwait, ({ sigset_t s; sigemptyset(&s); sigaddset(&s, SIGUSR2); struct timespec t = {ms / 1000, (ms % 1000) * 1000000L}; sigtimedwait(&s, 0, &t); }))
WAITER(w_epoll_wait, ({ struct epoll_event e; epoll_wait(ep, &e, 1, ms); }))
WAITER(w_epoll_pwait, ({ struct epoll_event e; sigset_t s; sigemptyset(&s); epoll_pwait(ep, &e, 1, ms, &s); }))
WAITER(w_poll_forever, ({ struct pollfd p = {wake[0], POLLIN, 0}; poll(&p, 1, -1); }))

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
  ms = atoi(argv[2]);
  if (pipe(never) || pipe(wake)) return 3;
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {EPOLLIN, {0}};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, never[0], &ev)) return 4;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &set, 0);
  void *(*waiters[])(void *) = {w_poll,         w_ppoll,        w_select,       w_nanosleep,
                                w_clock_nanosleep, w_futex,     w_sigtimedwait, w_epoll_wait,
                                w_epoll_pwait,  w_poll_forever};
  pthread_t t;
  pthread_create(&t, 0, heartbeat, 0);
  for (unsigned i = 0; i < sizeof waiters / sizeof *waiters; i++) pthread_create(&t, 0, waiters[i], 0);
  signal(SIGUSR1, on_usr1);
  sigdelset(&set, SIGUSR2);
  pthread_sigmask(SIG_UNBLOCK, &set, 0);
  dprintf(log_fd, "start pid=%d\n", getpid());
  for (;;) pause();
}
