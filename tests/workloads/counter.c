/* A long-running workload for dump/restore tests: patterned anonymous memory,
 * an O_APPEND log, a file read at a non-zero offset, a SIGUSR1 handler, AVX
 * registers held across the checkpoint, and a counter it prints every tick.
 * usage: counter DIR MIB  — writes DIR/log; answers SIGUSR1 by writing a
 * report line (pid, counter, memory checksum, offset, ymm check) to DIR/log. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <immintrin.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t report_wanted;
static void on_usr1(int sig) { (void)sig; report_wanted = 1; }

static uint64_t checksum(const uint64_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: counter DIR MIB\n"); return 2; }
  char path[4096];
  size_t mib = strtoul(argv[2], 0, 10);
  size_t words = mib * (1 << 20) / 8;
  uint64_t *mem = mmap(0, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 3;
  for (size_t i = 0; i < words; i++) mem[i] = i * 0x9e3779b97f4a7c15ull;
  uint64_t sum0 = checksum(mem, words);

  snprintf(path, sizeof path, "%s/log", argv[1]);
  int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  snprintf(path, sizeof path, "%s/data", argv[1]);
  int data = open(path, O_RDWR | O_CREAT, 0600);
  if (log < 0 || data < 0) return 4;
  if (write(data, "0123456789abcdef", 16) != 16) return 5;
  lseek(data, 7, SEEK_SET);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, 0);

  /* A value kept only in ymm registers across every tick. */
  __m256i keep = _mm256_set_epi64x(0x1111222233334444ll, 0x5555666677778888ll, 0x0123456789abcdefll, (long long)sum0);
  dprintf(log, "start pid=%d sum=%016llx\n", getpid(), (unsigned long long)sum0);
  for (uint64_t tick = 0;; tick++) {
    struct timespec ts = {0, 20 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0) {}
    __asm__ volatile("" : "+x"(keep));
    if (report_wanted) {
      report_wanted = 0;
      long long lanes[4];
      _mm256_storeu_si256((__m256i *)lanes, keep);
      int ymm_ok = lanes[3] == 0x1111222233334444ll && lanes[0] == (long long)sum0;
      off_t off = lseek(data, 0, SEEK_CUR);
      dprintf(log, "report pid=%d tick=%llu sum=%016llx want=%016llx off=%lld ymm=%d\n", getpid(),
              (unsigned long long)tick, (unsigned long long)checksum(mem, words), (unsigned long long)sum0,
              (long long)off, ymm_ok);
    }
  }
}
