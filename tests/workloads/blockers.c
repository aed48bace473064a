/* blockers DIR: a tree ckpt cannot dump, for several reasons at once: a
 * pidfd and an io_uring instance in the root, and a child in a UTS
 * namespace of its own; beside them an epoll and a timerfd that ckpt does
 * save. Logs "ready" once all is in place, then sleeps. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[1]);
  FILE *log = fopen(path, "a");
  if (!log) return 1;
  setvbuf(log, NULL, _IONBF, 0);
  int sync[2];
  if (pipe(sync)) return 1;
  pid_t child = fork();
  if (child == 0) {
    if (unshare(CLONE_NEWUTS)) _exit(1);
    if (write(sync[1], "k", 1) != 1) _exit(1);
    for (;;) pause();
  }
  char k;
  if (read(sync[0], &k, 1) != 1) return 1;
  // Of its parent, outside the tree.
  int pidfd = (int)syscall(SYS_pidfd_open, getppid(), 0);
  unsigned char params[120];
  memset(params, 0, sizeof params);
  int ring = (int)syscall(SYS_io_uring_setup, 4, params);
  int ep = epoll_create1(0);
  int t = timerfd_create(CLOCK_MONOTONIC, 0);
  struct epoll_event e = {.events = EPOLLIN, .data.u64 = 1};
  if (pidfd < 0 || ring < 0 || ep < 0 || t < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, t, &e)) return 1;
  fprintf(log, "ready child=%d pidfd=%d ring=%d ep=%d t=%d\n", child, pidfd, ring, ep, t);
  for (;;) pause();
}
