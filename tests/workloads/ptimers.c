/* POSIX timers of every notification kind:
 *   A: CLOCK_MONOTONIC, SIGEV_SIGNAL (SIGRTMIN+1) with a 64-bit sigev value, every 50 ms;
 *   B: CLOCK_MONOTONIC, SIGEV_THREAD_ID to a second thread (SIGRTMIN+2), every 70 ms;
 *   C: CLOCK_REALTIME, SIGEV_THREAD (glibc's helper thread), every 40 ms;
 *   D: CLOCK_BOOTTIME, one-shot, armed LEFT_MS ms ahead, signal SIGRTMIN+3;
 *   E: CLOCK_MONOTONIC, SIGEV_NONE, every 1 s (only timer_gettime sees it);
 *   F: created and never armed;
 *   with "threadcpu" also G: CLOCK_THREAD_CPUTIME_ID of the main thread (which
 *   /proc does not name, so a dump must refuse it in a process with threads).
 * Each delivery is checked where it lands (the timer id and value the kernel
 * reports against what timer_create gave); SIGUSR1 appends one report line
 * to LOG with the counts, ids, values, wrong deliveries and D's time left.
 * usage: ptimers LOG [LEFT_MS [threadcpu]] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define VAL_A 0x1122334455667788ULL
#define VAL_B 0x0badc0ffee0ddf00ULL
#define VAL_C 77
#define VAL_D 0x7eadbeefULL

static timer_t ta, tb, tc, td, te, tf;
static volatile uint64_t na, nb, nc, nd, bad;
static volatile pid_t b_tid, b_seen_tid;
static volatile sig_atomic_t want_report;
static int log_fd;

static int kid(timer_t t) { return (int)(intptr_t)t; }

static void on_a(int s, siginfo_t *si, void *u) {
  (void)s; (void)u;
  if (si->si_code != SI_TIMER || si->si_timerid != kid(ta) ||
      (uint64_t)(uintptr_t)si->si_value.sival_ptr != VAL_A)
    bad++;
  else
    na++;
}

static void on_d(int s, siginfo_t *si, void *u) {
  (void)s; (void)u;
  if (si->si_code != SI_TIMER || si->si_timerid != kid(td) ||
      (uint64_t)(uintptr_t)si->si_value.sival_ptr != VAL_D)
    bad++;
  else
    nd++;
}

static void on_usr1(int s) { (void)s; want_report = 1; }

static void on_c(union sigval v) {
  if (v.sival_int != VAL_C) bad++;
  else nc++;
}

static void *thread_b(void *arg) {
  (void)arg;
  b_tid = gettid();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGRTMIN + 2);
  for (;;) {
    siginfo_t si;
    if (sigwaitinfo(&set, &si) < 0) continue;
    if (si.si_code != SI_TIMER || (uint64_t)(uintptr_t)si.si_value.sival_ptr != VAL_B) bad++;
    else nb++;
    b_seen_tid = gettid();
  }
  return 0;
}

static void arm(timer_t t, long first_ms, long every_ms) {
  struct itimerspec its = {
      {every_ms / 1000, (every_ms % 1000) * 1000000L},
      {first_ms / 1000, (first_ms % 1000) * 1000000L},
  };
  if (timer_settime(t, 0, &its, 0)) _exit(3);
}

static long left_ms(timer_t t) {
  struct itimerspec its;
  timer_gettime(t, &its);
  return its.it_value.tv_sec * 1000 + its.it_value.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  long d_ms = argc > 2 ? atol(argv[2]) : 4000;
  log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
  /* Thread B's signal is blocked everywhere: it only ever arrives through sigwaitinfo. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGRTMIN + 2);
  pthread_sigmask(SIG_BLOCK, &set, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sa.sa_sigaction = on_a;
  sigaction(SIGRTMIN + 1, &sa, 0);
  sa.sa_sigaction = on_d;
  sigaction(SIGRTMIN + 3, &sa, 0);
  signal(SIGUSR1, on_usr1);

  pthread_t t;
  pthread_create(&t, 0, thread_b, 0);
  while (!b_tid) usleep(1000);

  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = SIGRTMIN + 1;
  ev.sigev_value.sival_ptr = (void *)(uintptr_t)VAL_A;
  if (timer_create(CLOCK_MONOTONIC, &ev, &ta)) return 3;

  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_THREAD_ID;
  ev.sigev_signo = SIGRTMIN + 2;
  ev.sigev_value.sival_ptr = (void *)(uintptr_t)VAL_B;
  ev._sigev_un._tid = b_tid;
  if (timer_create(CLOCK_MONOTONIC, &ev, &tb)) return 3;

  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_THREAD;
  ev.sigev_notify_function = on_c;
  ev.sigev_value.sival_int = VAL_C;
  if (timer_create(CLOCK_REALTIME, &ev, &tc)) return 3;

  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = SIGRTMIN + 3;
  ev.sigev_value.sival_ptr = (void *)(uintptr_t)VAL_D;
  if (timer_create(CLOCK_BOOTTIME, &ev, &td)) return 3;

  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_NONE;
  if (timer_create(CLOCK_MONOTONIC, &ev, &te)) return 3;
  if (timer_create(CLOCK_MONOTONIC, 0, &tf)) return 3;
  timer_t tg;
  if (argc > 3 && !strcmp(argv[3], "threadcpu") && timer_create(CLOCK_THREAD_CPUTIME_ID, 0, &tg))
    return 3;

  arm(ta, 50, 50);
  arm(tb, 70, 70);
  arm(tc, 40, 40);
  arm(td, d_ms, 0);
  arm(te, 1000, 1000);
  dprintf(log_fd, "start pid=%d a=%d b=%d d=%d e=%d f=%d btid=%d\n", getpid(), kid(ta), kid(tb),
          kid(td), kid(te), kid(tf), b_tid);
  for (;;) {
    pause();
    if (want_report) {
      want_report = 0;
      struct itimerspec ef;
      timer_gettime(tf, &ef);
      dprintf(log_fd,
              "report pid=%d a=%d na=%lu b=%d nb=%lu btid=%d seen=%d nc=%lu d=%d nd=%lu "
              "dleft=%ld eleft=%ld farmed=%d bad=%lu\n",
              getpid(), kid(ta), na, kid(tb), nb, b_tid, b_seen_tid, nc, kid(td), nd, left_ms(td),
              left_ms(te), ef.it_value.tv_sec || ef.it_value.tv_nsec, bad);
    }
  }
}
