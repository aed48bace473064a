/* epollbench DIR N: a server's worth of descriptors in one epoll set: N
 * UNIX sockets (N/2 socketpairs, one in a hundred with a byte queued), 16
 * armed timerfds and 16 eventfds, all registered. Logs "start" once set
 * up, then waits (bench shape for `deno task bench --only fds`). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

static int add(int ep, int fd) {
  struct epoll_event e = {.events = EPOLLIN, .data.u64 = (uint64_t)fd << 8 | 1};
  return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int n = atoi(argv[2]);
  struct rlimit lim = {(rlim_t)n + 256, (rlim_t)n + 256};
  if (setrlimit(RLIMIT_NOFILE, &lim)) return 1;
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[1]);
  FILE *log = fopen(path, "a");
  if (!log) return 1;
  setvbuf(log, NULL, _IONBF, 0);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < n / 2; i++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || add(ep, sv[0]) || add(ep, sv[1])) return 1;
    if (i % 100 == 0 && write(sv[1], "x", 1) != 1) return 1;
  }
  for (int i = 0; i < 16; i++) {
    int t = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec its = {.it_value = {60, 0}, .it_interval = {60, 0}};
    int e = eventfd(0, EFD_NONBLOCK);
    if (t < 0 || e < 0 || timerfd_settime(t, 0, &its, NULL) || add(ep, t) || add(ep, e)) return 1;
  }
  fprintf(log, "start\n");
  for (;;) pause();
}
