/* pipeflags DIR: pipes whose open file descriptions differ — a read end
 * non-blocking with its write end blocking, one read end opened twice
 * (through /proc/self/fd) with different flags, a pipe resized to 1 MiB —
 * and stdin, a pipe whose writer is outside the tree. SIGUSR1 logs every
 * flag and size; SIGUSR2 reads stdin to its end and logs what came. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t want_flags, want_stdin;
static void on_usr1(int s) { (void)s; want_flags = 1; }
static void on_usr2(int s) { (void)s; want_stdin = 1; }

static int nb(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[1]);
  FILE *log = fopen(path, "a");
  if (!log) return 1;
  setvbuf(log, NULL, _IONBF, 0);
  int a[2], b[2], c[2];
  if (pipe(a) || pipe(b) || pipe(c)) return 1;
  fcntl(a[0], F_SETFL, O_NONBLOCK);
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", b[0]);
  int b2 = open(self, O_RDONLY | O_NONBLOCK);
  if (b2 < 0) return 1;
  if (fcntl(c[1], F_SETPIPE_SZ, 1 << 20) < 0) return 1;
  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  fprintf(log, "start\n");
  for (;;) {
    pause();
    if (want_flags) {
      want_flags = 0;
      fprintf(log, "flags a0=%d a1=%d b0=%d b2=%d csize=%d\n", nb(a[0]), nb(a[1]), nb(b[0]), nb(b2),
              fcntl(c[0], F_GETPIPE_SZ));
    }
    if (want_stdin) {
      want_stdin = 0;
      char buf[256];
      size_t got = 0;
      ssize_t n;
      while (got < sizeof buf - 1 && (n = read(0, buf + got, sizeof buf - 1 - got)) > 0) got += n;
      buf[got] = 0;
      for (char *p = buf; *p; p++) if (*p == '\n') *p = '|';
      fprintf(log, "stdin=%s eof\n", buf);
    }
  }
}
