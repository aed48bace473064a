/* fanout DIR N MIB THREADS: N processes (the root and N-1 children), each
 * with MIB MiB of touched memory and THREADS threads; writes DIR/log "start"
 * once all are set up. Used by the benchmark. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *idle(void *a) {
  (void)a;
  for (;;) {
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, 0);
  }
  return 0;
}

static void setup(size_t mib, int threads) {
  char *m = malloc(mib << 20);
  for (size_t i = 0; i < (mib << 20); i += 4096) m[i] = (char)(i >> 12) | 1;
  pthread_t t;
  for (int i = 1; i < threads; i++) pthread_create(&t, 0, idle, 0);
}

int main(int argc, char **argv) {
  if (argc < 5) return 2;
  int n = atoi(argv[2]), threads = atoi(argv[4]);
  size_t mib = strtoul(argv[3], 0, 10);
  int p[2];
  if (pipe(p)) return 3;
  for (int i = 1; i < n; i++) {
    if (fork() == 0) {
      setup(mib, threads);
      if (write(p[1], "r", 1) != 1) return 4;
      idle(0);
    }
  }
  setup(mib, threads);
  char c;
  for (int i = 1; i < n; i++)
    if (read(p[0], &c, 1) != 1) return 5;
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[1]);
  int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  dprintf(log, "start\n");
  idle(0);
}
