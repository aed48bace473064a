/* fdexec PID SRC:DST[,SRC:DST...] PROG ARGS... : take fd SRC of process PID
 * (pidfd_getfd, so PID may be the test runner itself, which cannot pass
 * extra fds to a child) as fd DST of this process, for every pair, then exec
 * PROG. Lets a test start `ckpt swrk 3` with a socketpair end on fd 3, as
 * runc does, and hand it the pipes of a container's stdio. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: fdexec PID SRC:DST[,SRC:DST...] PROG ARGS...\n");
    return 2;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, atoi(argv[1]), 0);
  if (pidfd < 0) { perror("pidfd_open"); return 1; }
  int src[64], dst[64], got[64], n = 0;
  for (char *p = strtok(argv[2], ","); p && n < 64; p = strtok(NULL, ","), n++) {
    if (sscanf(p, "%d:%d", &src[n], &dst[n]) != 2) { fprintf(stderr, "bad pair %s\n", p); return 2; }
  }
  /* Take every one above every target first, then place them. */
  for (int i = 0; i < n; i++) {
    int fd = (int)syscall(SYS_pidfd_getfd, pidfd, src[i], 0);
    if (fd < 0) { perror("pidfd_getfd"); return 1; }
    got[i] = fcntl(fd, F_DUPFD, 512);
    if (got[i] < 0) { perror("fcntl"); return 1; }
    close(fd);
  }
  close(pidfd); /* before placing: it may sit on a target number */
  for (int i = 0; i < n; i++) {
    if (dup2(got[i], dst[i]) < 0) { perror("dup2"); return 1; }
  }
  for (int i = 0; i < n; i++) {
    int used = 0;
    for (int j = 0; j < n; j++) used |= dst[j] == got[i];
    if (!used) close(got[i]);
  }
  execvp(argv[3], argv + 3);
  perror("execvp");
  return 127;
}
