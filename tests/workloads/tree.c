/* A small process tree for dump/restore tests.
 * usage: tree DIR
 *   root (session leader) ──pipe A──> child1 (own process group) ──pipe B──> grandchild
 *   child2 exits with status 42 at once and stays a zombie until the root gets SIGUSR1.
 * Every task bumps its slot of a MAP_SHARED counter table; the grandchild appends each
 * number it receives to DIR/chain.log; child1 writes one byte per number to DIR/shared.txt
 * through an fd it shares with the root (one open file description). SIGUSR2 makes the
 * root append a report line to DIR/report.log. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_reap, want_report;
static void on_usr1(int s) { (void)s; want_reap = 1; }
static void on_usr2(int s) { (void)s; want_report = 1; }

static void nap(long ms) {
  struct timespec ts = {0, ms * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {}
}

static int read_line(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    ssize_t r = read(fd, buf + n, 1);
    if (r <= 0) return -1;
    if (buf[n] == '\n') break;
    n++;
  }
  buf[n] = 0;
  return (int)n;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char path[4096];
  volatile uint64_t *counters = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  snprintf(path, sizeof path, "%s/shared.txt", argv[1]);
  int shared = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  int a[2], b[2];
  if (pipe(a) || pipe(b) || shared < 0) return 3;

  pid_t c1 = fork();
  if (c1 == 0) {
    setpgid(0, 0);
    pid_t g = fork();
    if (g == 0) {
      close(a[0]); close(a[1]); close(b[1]);
      snprintf(path, sizeof path, "%s/chain.log", argv[1]);
      int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
      char line[64];
      while (read_line(b[0], line, sizeof line) >= 0) {
        dprintf(log, "%s\n", line);
        counters[3]++;
      }
      return 0;
    }
    close(a[1]); close(b[0]);
    char line[64];
    while (read_line(a[0], line, sizeof line) >= 0) {
      dprintf(b[1], "%s\n", line);
      if (write(shared, "x", 1) != 1) return 4;
      counters[1]++;
    }
    return 0;
  }
  pid_t c2 = fork();
  if (c2 == 0) _exit(42);

  close(a[0]); close(b[0]); close(b[1]);
  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  snprintf(path, sizeof path, "%s/report.log", argv[1]);
  int report = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  dprintf(report, "start root=%d c1=%d c2=%d\n", getpid(), c1, c2);
  for (uint64_t n = 0;; n++) {
    dprintf(a[1], "%llu\n", (unsigned long long)n);
    counters[0]++;
    if (want_reap) {
      want_reap = 0;
      int st = 0;
      pid_t r = waitpid(c2, &st, WNOHANG);
      dprintf(report, "reaped pid=%d exited=%d status=%d\n", r, WIFEXITED(st), WEXITSTATUS(st));
    }
    if (want_report) {
      want_report = 0;
      dprintf(report, "report off=%lld c0=%llu c1=%llu c3=%llu\n", (long long)lseek(shared, 0, SEEK_CUR),
              (unsigned long long)counters[0], (unsigned long long)counters[1], (unsigned long long)counters[3]);
    }
    nap(5);
  }
}
