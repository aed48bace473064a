/* epollwl DIR: one epoll set with registrations of every sort ckpt must
 * keep, shared with a child that adds a socket of its own to it:
 *   a0    socketpair end, EPOLLIN|EPOLLET, an edge pending (never waited for)
 *   ev    eventfd, EPOLLIN|EPOLLONESHOT, fired once (so disarmed), still ready
 *   R     pipe read end registered, then closed while a dup of it stays open,
 *         its number reused by another eventfd (ev2)
 *   E2    a second epoll (nested) holding eventfd ev3
 *   x0    socketpair end, EPOLLIN|EPOLLEXCLUSIVE; y0 EPOLLIN|EPOLLWAKEUP|EPOLLRDHUP
 *   b0    the child's own socketpair end, data pending (level-triggered)
 * logs "ready epfd=N" once set up; on SIGUSR1 checks what epoll_wait and
 * epoll_ctl say and logs one "check" line of name=ok|bad.
 * epollwl DIR orphan: an epoll with a pipe end registered whose only
 * reference is in flight in a socket queue (sent with SCM_RIGHTS, closed). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define D_A0 0x1111222233334444ull
#define D_EV 0xabcdull
#define D_EV_REARMED 0xabceull
#define D_PIPE 0x7777ull
#define D_E2 0xe2e2ull
#define D_EV3 0x33ull
#define D_CHILD 0xc41dull
#define D_A0_MOD 0x5555ull
#define D_X0 0x8888ull
#define D_Y0 0x9999ull

static volatile sig_atomic_t want;
static void on_usr1(int s) { (void)s; want = 1; }

static int add(int ep, int fd, uint32_t events, uint64_t data) {
  struct epoll_event e = {.events = events, .data.u64 = data};
  return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}

/* Whether epoll_wait(ep, timeout) reports data d. */
static int reports(int ep, uint64_t d, int timeout) {
  struct epoll_event evs[32];
  int n = epoll_wait(ep, evs, 32, timeout);
  for (int i = 0; i < n; i++) if (evs[i].data.u64 == d) return 1;
  return 0;
}

static uint64_t one = 1;

static int orphan(FILE *log) {
  int ep = epoll_create1(0);
  int s[2], p[2];
  if (socketpair(AF_UNIX, SOCK_DGRAM, 0, s) || pipe(p)) return 1;
  if (add(ep, p[0], EPOLLIN, D_PIPE)) return 1;
  char c = 'f';
  struct iovec iov = {.iov_base = &c, .iov_len = 1};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } ctl;
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                     .msg_controllen = sizeof ctl.buf};
  struct cmsghdr *h = CMSG_FIRSTHDR(&m);
  h->cmsg_level = SOL_SOCKET;
  h->cmsg_type = SCM_RIGHTS;
  h->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(h), &p[0], sizeof(int));
  if (sendmsg(s[0], &m, 0) != 1) return 1;
  int tfd = p[0];
  close(p[0]);
  fprintf(log, "ready epfd=%d tfd=%d\n", ep, tfd);
  for (;;) pause();
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[1]);
  FILE *log = fopen(path, "a");
  if (!log) return 1;
  setvbuf(log, NULL, _IONBF, 0);
  if (argc > 2 && !strcmp(argv[2], "orphan")) return orphan(log);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  int a[2], x[2], y[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) || socketpair(AF_UNIX, SOCK_STREAM, 0, x) ||
      socketpair(AF_UNIX, SOCK_STREAM, 0, y))
    return 1;
  if (add(ep, a[0], EPOLLIN | EPOLLET, D_A0)) return 1;
  if (write(a[1], "x", 1) != 1) return 1;

  int ev = eventfd(0, EFD_NONBLOCK);
  if (add(ep, ev, EPOLLIN | EPOLLONESHOT, D_EV)) return 1;
  if (write(ev, &one, 8) != 8) return 1;
  /* Fired: disarmed from now on. The same wait takes a0's edge. */
  if (!reports(ep, D_EV, 1000)) return 1;
  /* A new edge of a0 the program has not seen yet. */
  if (write(a[1], "y", 1) != 1) return 1;

  int p[2];
  if (pipe2(p, O_NONBLOCK)) return 1;
  int r = p[0];
  int keep = dup(r);
  if (add(ep, r, EPOLLIN, D_PIPE)) return 1;
  close(r);
  int ev2 = eventfd(0, 0); /* takes the number r had */
  if (ev2 != r) return 1;

  int ep2 = epoll_create1(0);
  int ev3 = eventfd(0, EFD_NONBLOCK);
  if (add(ep2, ev3, EPOLLIN, D_EV3) || add(ep, ep2, EPOLLIN, D_E2)) return 1;

  if (add(ep, x[0], EPOLLIN | EPOLLEXCLUSIVE, D_X0)) return 1;
  if (add(ep, y[0], EPOLLIN | EPOLLWAKEUP | EPOLLRDHUP, D_Y0)) return 1;

  int sync[2];
  if (pipe(sync)) return 1;
  pid_t child = fork();
  if (child == 0) {
    /* Numbers the parent uses for other files (or not at all). */
    int b[2];
    close(a[0]);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, b)) _exit(1);
    if (add(ep, b[0], EPOLLIN, D_CHILD)) _exit(1);
    if (write(b[1], "c", 1) != 1) _exit(1);
    if (write(sync[1], "k", 1) != 1) _exit(1);
    for (;;) pause();
  }
  char k;
  if (read(sync[0], &k, 1) != 1) return 1;
  signal(SIGUSR1, on_usr1);
  fprintf(log, "ready epfd=%d child=%d\n", ep, child);
  for (;;) {
    pause();
    if (!want) continue;
    want = 0;
    struct epoll_event evs[32];
    int n = epoll_wait(ep, evs, 32, 0);
    int et = 0, child_ok = 0, oneshot_quiet = 1, nothing_else = 1;
    for (int i = 0; i < n; i++) {
      uint64_t d = evs[i].data.u64;
      if (d == D_A0) et = 1;
      else if (d == D_CHILD) child_ok = 1;
      else if (d == D_EV) oneshot_quiet = 0;
      else nothing_else = 0;
    }
    int et_once = !reports(ep, D_A0, 0);
    if (write(p[1], "z", 1) != 1) return 1;
    int closed = reports(ep, D_PIPE, 1000);
    if (write(ev3, &one, 8) != 8) return 1;
    int nested = reports(ep, D_E2, 1000) && reports(ep2, D_EV3, 1000);
    struct epoll_event m = {.events = EPOLLIN | EPOLLET, .data.u64 = D_A0_MOD};
    int mod = epoll_ctl(ep, EPOLL_CTL_MOD, a[0], &m) == 0;
    if (write(a[1], "w", 1) != 1) return 1;
    mod = mod && reports(ep, D_A0_MOD, 1000);
    if (write(ev, &one, 8) != 8) return 1;
    oneshot_quiet = oneshot_quiet && !reports(ep, D_EV, 200);
    struct epoll_event re = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = D_EV_REARMED};
    int rearm = epoll_ctl(ep, EPOLL_CTL_MOD, ev, &re) == 0 && reports(ep, D_EV_REARMED, 1000);
    /* The pipe was registered under a number that now holds ev2. */
    int del_enoent = epoll_ctl(ep, EPOLL_CTL_DEL, ev2, NULL) < 0 && errno == ENOENT;
    (void)keep;
    fprintf(log,
            "check et=%s et_once=%s child=%s oneshot_quiet=%s nothing_else=%s closed=%s nested=%s "
            "mod=%s rearm=%s del_enoent=%s\n",
            et ? "ok" : "bad", et_once ? "ok" : "bad", child_ok ? "ok" : "bad",
            oneshot_quiet ? "ok" : "bad", nothing_else ? "ok" : "bad", closed ? "ok" : "bad",
            nested ? "ok" : "bad", mod ? "ok" : "bad", rearm ? "ok" : "bad",
            del_enoent ? "ok" : "bad");
  }
}
