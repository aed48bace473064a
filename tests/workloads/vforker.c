/* A parent blocked in vfork(): the child sleeps instead of calling exec.
 * usage: vforker LOG — logs "child PID" from the child, then the parent stays
 * blocked until the child exits (it never does on its own). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  int log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
  pid_t c = vfork();
  if (c == 0) {
    /* Only async-signal-safe calls between vfork and _exit. */
    char line[32];
    int n = snprintf(line, sizeof line, "child %d\n", getpid());
    if (write(log_fd, line, n) != n) _exit(1);
    for (;;) {
      struct timespec ts = {60, 0};
      nanosleep(&ts, 0);
    }
  }
  dprintf(log_fd, "parent back\n");
  for (;;) pause();
}
