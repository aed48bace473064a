/* A program that changes its memory while a lazy restore is still bringing
 * its pages in: MIB MiB of patterned anonymous memory, then, once restored,
 * one of
 *   dontneed  MADV_DONTNEED on the last 32 MiB: zeroes there at once (first
 *             half) and once every page is in (second half)
 *   mremap    the 16 MiB before those moved elsewhere: the pattern at the new
 *             place at once (first half) and once every page is in (rest)
 *   fork      a child checks the whole pattern and exits 0 (right) or 1; the
 *             parent then checks its own
 * usage: lazymut DIR MIB — writes "start pid=N" to DIR/log, then polls every
 * millisecond for DIR/go (created after the dump, so only the restored
 * process sees it), whose content names what to do; "once every page is in"
 * is DIR/all, created by the test when restore -d has returned. The outcome
 * is one line "result WHAT ok=0|1 ..." in DIR/log; then it sleeps. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *dir;
static int logfd;

static uint64_t pattern(size_t i) { return i * 0x9e3779b97f4a7c15ull + 1; }

static void nap(long ns) {
  struct timespec ts = {0, ns};
  while (nanosleep(&ts, &ts) != 0) {}
}

/* Content of DIR/NAME once it exists (polled every millisecond). */
static void await_file(const char *name, char *buf, size_t len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  for (;;) {
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
      ssize_t n = read(fd, buf, len - 1);
      close(fd);
      buf[n > 0 ? n : 0] = 0;
      buf[strcspn(buf, "\n")] = 0;
      return;
    }
    nap(1000 * 1000);
  }
}

/* Index of the first word of w[0..n) that is not want(first + i), or n. */
static size_t first_bad(const uint64_t *w, size_t n, size_t first, int zero) {
  for (size_t i = 0; i < n; i++)
    if (w[i] != (zero ? 0 : pattern(first + i))) return i;
  return n;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: lazymut DIR MIB\n"); return 2; }
  dir = argv[1];
  size_t words = strtoul(argv[2], 0, 10) * (1 << 20) / 8;
  uint64_t *mem = mmap(0, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 3;
  for (size_t i = 0; i < words; i++) mem[i] = pattern(i);
  char path[4096], what[64], all[8];
  snprintf(path, sizeof path, "%s/log", dir);
  logfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (logfd < 0) return 4;
  dprintf(logfd, "start pid=%d\n", getpid());

  await_file("go", what, sizeof what);
  const size_t mib = (1 << 20) / 8, tail = 32 * mib, moved = 16 * mib;
  if (!strcmp(what, "dontneed")) {
    uint64_t *t = mem + words - tail;
    if (madvise(t, tail * 8, MADV_DONTNEED)) return 5;
    size_t a = first_bad(t, tail / 2, 0, 1);
    await_file("all", all, sizeof all);
    size_t b = first_bad(t + tail / 2, tail / 2, 0, 1);
    dprintf(logfd, "result dontneed ok=%d first=%zu second=%zu of %zu\n",
            a == tail / 2 && b == tail / 2, a, b, tail / 2);
  } else if (!strcmp(what, "mremap")) {
    size_t from = words - tail - moved;
    void *place = mmap(0, moved * 8, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (place == MAP_FAILED) return 6;
    uint64_t *m = mremap(mem + from, moved * 8, moved * 8, MREMAP_MAYMOVE | MREMAP_FIXED, place);
    if (m == MAP_FAILED) return 7;
    size_t a = first_bad(m, moved / 2, from, 0);
    await_file("all", all, sizeof all);
    size_t b = first_bad(m + moved / 2, moved / 2, from + moved / 2, 0);
    dprintf(logfd, "result mremap ok=%d first=%zu second=%zu of %zu\n",
            a == moved / 2 && b == moved / 2, a, b, moved / 2);
  } else if (!strcmp(what, "fork")) {
    pid_t child = fork();
    if (child < 0) return 8;
    if (child == 0) _exit(first_bad(mem, words, 0, 0) == words ? 0 : 1);
    int st = 0;
    if (waitpid(child, &st, 0) != child) return 9;
    size_t own = first_bad(mem, words, 0, 0);
    int child_ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    dprintf(logfd, "result fork ok=%d child_status=%d parent_first_bad=%zu of %zu\n",
            child_ok && own == words, st, own, words);
  } else {
    dprintf(logfd, "result %s ok=0 unknown\n", what);
  }
  for (;;) pause();
}
