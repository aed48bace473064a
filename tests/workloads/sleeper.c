/* Sleeps one long nanosleep at a time, resuming with the remaining time when
 * interrupted, and logs each completed sleep with how long it really took.
 * usage: sleeper LOG MS */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
  long ms = strtol(argv[2], 0, 10);
  dprintf(log, "start pid=%d\n", getpid());
  for (int i = 0;; i++) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    double t0 = now();
    int interrupted = 0;
    while (nanosleep(&ts, &ts) != 0) {
      if (errno != EINTR) return 3;
      interrupted++;
    }
    dprintf(log, "slept i=%d ms=%.0f interrupted=%d\n", i, (now() - t0) * 1000, interrupted);
  }
}
