/* anonfdwl DIR: timerfds and a signalfd for ckpt to keep.
 *   rel   CLOCK_MONOTONIC, relative, 30 s
 *   abs   CLOCK_MONOTONIC, TFD_TIMER_ABSTIME, the same expiry as rel
 *   done  one-shot 5 ms: expired, its one expiration not read
 *   per   periodic: first after 5 ms, then every 30 s (one expiration unread)
 *   wall  CLOCK_REALTIME, TFD_TIMER_ABSTIME|TFD_TIMER_CANCEL_ON_SET, in an hour
 *   sfd   signalfd for SIGUSR2 and SIGRTMIN+1 (both blocked), non-blocking
 * Every millisecond it notes the monotonic time and what rel and abs have
 * left; when it finds it did not run for more than 100 ms (it was dumped),
 * it logs "gap" with both timers' time left just before and just after.
 * SIGUSR1 logs "read" with the expirations each timer has and the signals
 * the signalfd gives. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want;
static void on_usr1(int s) { (void)s; want = 1; }

static int64_t ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

static int64_t mono(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return ns(t);
}

static int64_t left(int fd) {
  struct itimerspec its;
  timerfd_gettime(fd, &its);
  return ns(its.it_value);
}

static uint64_t expirations(int fd) {
  uint64_t n = 0;
  if (read(fd, &n, 8) != 8) return 0;
  return n;
}

static int arm(int clock, int flags, int64_t value, int64_t interval) {
  int fd = timerfd_create(clock, TFD_NONBLOCK | TFD_CLOEXEC);
  struct itimerspec its = {
      .it_value = {value / 1000000000, value % 1000000000},
      .it_interval = {interval / 1000000000, interval % 1000000000},
  };
  if (fd < 0 || timerfd_settime(fd, flags, &its, NULL)) return -1;
  return fd;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[1]);
  FILE *log = fopen(path, "a");
  if (!log) return 1;
  setvbuf(log, NULL, _IONBF, 0);

  const int64_t S = 1000000000;
  int64_t t0 = mono();
  int rel = arm(CLOCK_MONOTONIC, 0, 30 * S, 0);
  int abs = arm(CLOCK_MONOTONIC, TFD_TIMER_ABSTIME, t0 + 30 * S, 0);
  int done = arm(CLOCK_MONOTONIC, 0, 5000000, 0);
  int per = arm(CLOCK_MONOTONIC, 0, 5000000, 30 * S);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  int wall = arm(CLOCK_REALTIME, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, ns(now) + 3600 * S, 0);
  if (rel < 0 || abs < 0 || done < 0 || per < 0 || wall < 0) return 1;

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, SIGRTMIN + 1);
  sigprocmask(SIG_BLOCK, &set, NULL);
  int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) return 1;
  signal(SIGUSR1, on_usr1);
  usleep(20000); /* done and per have fired */
  fprintf(log, "start rel=%d abs=%d done=%d per=%d wall=%d sfd=%d\n", rel, abs, done, per, wall,
          sfd);

  int64_t last = mono(), rel_last = left(rel), abs_last = left(abs);
  for (;;) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
    int64_t t = mono(), r = left(rel), a = left(abs);
    if (t - last > 100000000) {
      fprintf(log, "gap ms=%lld rel_before=%lld rel_after=%lld abs_before=%lld abs_after=%lld\n",
              (long long)((t - last) / 1000000), (long long)rel_last, (long long)r,
              (long long)abs_last, (long long)a);
    }
    last = t, rel_last = r, abs_last = a;
    if (want) {
      want = 0;
      char sigs[256] = "";
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
        char one[32];
        snprintf(one, sizeof one, "%s%u", sigs[0] ? "," : "", si.ssi_signo);
        strncat(sigs, one, sizeof sigs - strlen(sigs) - 1);
      }
      uint64_t d = expirations(done), p = expirations(per);
      fprintf(log, "read done=%llu per=%llu per_left_s=%lld sigs=%s\n", (unsigned long long)d,
              (unsigned long long)p, (long long)(left(per) / S), sigs);
    }
  }
}
