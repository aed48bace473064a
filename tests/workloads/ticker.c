/* ticker MIB: a container-like workload whose stdout is a pipe to its
 * supervisor. Fills MIB MiB with a pattern, then every 20 ms writes
 * "tick N pid P sum S" to stdout, S the checksum of that memory, and on
 * SIGUSR1 rewrites one word of every fourth page (so a dump after a
 * pre-dump has those to save again, and the rest to leave in the parent). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t dirty;
static void on_usr1(int s) { (void)s; dirty = 1; }

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 4;
  size_t words = mib << 17;
  uint64_t *mem = mmap(0, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 1;
  for (size_t i = 0; i < words; i++) mem[i] = i * 0x9e3779b97f4a7c15ull;
  signal(SIGUSR1, on_usr1);
  signal(SIGPIPE, SIG_DFL);
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct timespec ts = {0, 20 * 1000 * 1000};
  for (uint64_t n = 0;; n++) {
    if (dirty) {
      dirty = 0;
      for (size_t i = 0; i < words; i += 4 * 512) mem[i] ^= 1;
    }
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < words; i += 64) h = (h ^ mem[i]) * 1099511628211ull;
    printf("tick %llu pid %d sum %016llx\n", (unsigned long long)n, getpid(), (unsigned long long)h);
    nanosleep(&ts, NULL);
  }
}
