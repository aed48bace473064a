/* clocks DIR : sleeps to absolute CLOCK_MONOTONIC deadlines 100 ms apart and
 * appends one line per tick to DIR/ticks: "tick N mono=MS boot=MS". A tree
 * restored into a time namespace whose clocks go on from their dump-time
 * values ticks on with no gap; without one, its monotonic clock jumps by the
 * time it spent dumped. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static long ms(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/ticks", argv[1]);
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (fd < 0) return 3;
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  for (long n = 0;; n++) {
    next.tv_nsec += 100 * 1000000L;
    if (next.tv_nsec >= 1000000000L) {
      next.tv_nsec -= 1000000000L;
      next.tv_sec++;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) != 0) {}
    char line[128];
    int k = snprintf(line, sizeof line, "tick %ld mono=%ld boot=%ld\n", n, ms(CLOCK_MONOTONIC),
                     ms(CLOCK_BOOTTIME));
    if (write(fd, line, k) != k) return 4;
  }
}
