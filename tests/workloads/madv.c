/* Memory with every madvise state ckpt keeps, and locked memory:
 * 16 KiB regions advised MADV_DONTFORK, MADV_WIPEONFORK, MADV_DONTDUMP,
 * MADV_NOHUGEPAGE, MADV_MERGEABLE, MADV_SEQUENTIAL, MADV_RANDOM, one mlock'ed,
 * one mlock2(MLOCK_ONFAULT)'ed, one sealed (mseal), and a 4 MiB MADV_HUGEPAGE region; each region
 * is filled with its own byte. With "future", mlockall(MCL_FUTURE) last.
 * Logs "start NAME=ADDR …". SIGUSR1: "report ok=1|0 newlocked=0|1" (every
 * region still holds its byte; whether a mapping made now is locked).
 * SIGUSR2: forks; the child logs "child wipe=zero|data dontfork=unmapped|mapped",
 * then the parent "parent wipe=data|zero" (its own copy is untouched).
 * usage: madv LOG [future] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define SZ (16 << 10)
#define HUGE_SZ (4 << 20)

struct region {
  const char *name;
  int advice; /* -1: none */
  size_t size;
  unsigned char *p;
  unsigned char fill;
};

static struct region regions[] = {
    {"dontfork", MADV_DONTFORK, SZ, 0, 0xa1},
    {"wipe", MADV_WIPEONFORK, SZ, 0, 0xa2},
    {"dontdump", MADV_DONTDUMP, SZ, 0, 0xa3},
    {"nohuge", MADV_NOHUGEPAGE, SZ, 0, 0xa4},
    {"merge", MADV_MERGEABLE, SZ, 0, 0xa5},
    {"seq", MADV_SEQUENTIAL, SZ, 0, 0xa6},
    {"rand", MADV_RANDOM, SZ, 0, 0xa7},
    {"lock", -1, SZ, 0, 0xa8},
    {"lockonfault", -1, SZ, 0, 0xa9},
    {"sealed", -1, SZ, 0, 0xab},
    {"huge", MADV_HUGEPAGE, HUGE_SZ, 0, 0xaa},
};
#define N (sizeof regions / sizeof regions[0])

static volatile sig_atomic_t want_report, want_fork;
static int log_fd;
static void on_usr1(int s) { (void)s; want_report = 1; }
static void on_usr2(int s) { (void)s; want_fork = 1; }

static struct region *find(const char *name) {
  for (size_t i = 0; i < N; i++)
    if (!strcmp(regions[i].name, name)) return &regions[i];
  return 0;
}

static int holds(struct region *r, unsigned char v) {
  for (size_t i = 0; i < r->size; i++)
    if (r->p[i] != v) return 0;
  return 1;
}

/* Whether the mapping holding addr has VmFlag `flag`, per our own smaps. */
static int has_flag(void *addr, const char *flag) {
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[512];
  int in = 0, found = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
    } else if (in && !strncmp(line, "VmFlags:", 8)) {
      char want[8];
      snprintf(want, sizeof want, " %s", flag);
      found = strstr(line, want) != 0;
      break;
    }
  }
  fclose(f);
  return found;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  int future = argc > 2 && !strcmp(argv[2], "future");
  log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
  for (size_t i = 0; i < N; i++) {
    struct region *r = &regions[i];
    size_t span = r->size == HUGE_SZ ? 2 * HUGE_SZ : r->size;
    unsigned char *p = mmap(0, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 3;
    if (r->size == HUGE_SZ) { /* 2 MiB aligned, so a huge page can back it */
      unsigned char *a = (unsigned char *)(((uintptr_t)p + (2 << 20) - 1) & ~((uintptr_t)(2 << 20) - 1));
      munmap(p, a - p);
      munmap(a + HUGE_SZ, p + span - (a + HUGE_SZ));
      p = a;
    }
    r->p = p;
    if (r->advice >= 0 && madvise(p, r->size, r->advice)) return 4;
    memset(p, r->fill, r->size);
  }
  if (mlock(find("lock")->p, SZ)) return 5;
  if (mlock2(find("lockonfault")->p, SZ, MLOCK_ONFAULT)) return 6;
  if (syscall(462 /* mseal */, find("sealed")->p, SZ, 0)) return 8;
  if (future && mlockall(MCL_FUTURE)) return 7;
  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  char line[2048];
  int n = snprintf(line, sizeof line, "start pid=%d", getpid());
  for (size_t i = 0; i < N; i++)
    n += snprintf(line + n, sizeof line - n, " %s=%p", regions[i].name, (void *)regions[i].p);
  dprintf(log_fd, "%s\n", line);
  for (;;) {
    pause();
    if (want_report) {
      want_report = 0;
      int ok = 1;
      for (size_t i = 0; i < N; i++) ok &= holds(&regions[i], regions[i].fill);
      void *fresh = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      int locked = has_flag(fresh, "lo");
      munmap(fresh, 4096);
      dprintf(log_fd, "report ok=%d newlocked=%d\n", ok, locked);
    }
    if (want_fork) {
      want_fork = 0;
      pid_t c = fork();
      if (c == 0) {
        unsigned char vec;
        int gone = mincore(find("dontfork")->p, 4096, &vec) < 0 && errno == ENOMEM;
        dprintf(log_fd, "child wipe=%s dontfork=%s\n", holds(find("wipe"), 0) ? "zero" : "data",
                gone ? "unmapped" : "mapped");
        _exit(0);
      }
      waitpid(c, 0, 0);
      dprintf(log_fd, "parent wipe=%s\n", holds(find("wipe"), 0xa2) ? "data" : "zero");
    }
  }
}
