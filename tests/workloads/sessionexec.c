/* sessionexec PROG ARGS... : run PROG as a session leader with only fds 0-2,
 * whatever the test runner happened to inherit. */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  if (setsid() < 0) perror("setsid");
  close_range(3, ~0U, 0);
  execvp(argv[1], argv + 1);
  perror("execvp");
  return 127;
}
