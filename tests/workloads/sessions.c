/* Sessions and process groups the ordinary way: a child subreaper root (as a
 * container's init or a supervisor), a daemon that double-forked, a pipeline
 * whose group leader is gone, and a parent that called setsid after forking.
 * usage: sessions LOG
 *   root R: session leader, PR_SET_CHILD_SUBREAPER.
 *   daemon: R forks A, A forks B and exits; B calls setsid, forks D, exits:
 *     D's parent is R, its session and group B's, whose leader is gone.
 *   pipeline: R forks L (own group) and M (joins L's group); L exits and is
 *     reaped: M is in group L, which has no leader any more.
 *   late setsid: R forks E; E forks F, then calls setsid: F stays in R's
 *     session, its parent E in its own.
 * Every task appends "who NAME pid=.. ppid=.. sid=.. pgid=.." to LOG on
 * SIGUSR1 (from getppid/getsid/getpgrp, as it sees itself), and "usr2 NAME"
 * when SIGUSR2 reaches it (the test signals a whole group). The root logs
 * "children N" (its children as wait sees none to reap: a stray helper left
 * behind would show) and "ready ..." once the tree is built. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>

static volatile sig_atomic_t want_who, want_usr2;
static void on_usr1(int s) { (void)s; want_who = 1; }
static void on_usr2(int s) { (void)s; want_usr2 = 1; }
static int log_fd;
static const char *me = "root";

static void nap(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, 0);
}

static void serve(void) {
  for (;;) {
    if (want_who) {
      want_who = 0;
      dprintf(log_fd, "who %s pid=%d ppid=%d sid=%d pgid=%d\n", me, getpid(), getppid(), getsid(0), getpgrp());
      if (!strcmp(me, "root")) {
        int st;
        pid_t r = waitpid(-1, &st, WNOHANG);
        dprintf(log_fd, "stray %d\n", r > 0 ? r : 0);
      }
    }
    if (want_usr2) {
      want_usr2 = 0;
      dprintf(log_fd, "usr2 %s\n", me);
    }
    nap(10);
  }
}

static pid_t spawn(const char *name, void (*setup)(void)) {
  pid_t pid = fork();
  if (pid == 0) {
    me = name;
    if (setup) setup();
    serve();
  }
  return pid;
}

static int pipefd[2];

static void daemon_setup(void) {
  /* A: fork B and exit at once; B: setsid, fork D (the daemon), exit. */
  pid_t b = fork();
  if (b != 0) _exit(0);
  setsid();
  pid_t d = fork();
  if (d != 0) {
    dprintf(pipefd[1], "%d\n", d);
    _exit(0);
  }
  me = "daemon";
}

static pid_t leader;
static void leader_setup(void) { setpgid(0, 0); }
static void member_setup(void) { setpgid(0, leader); }

static void late_setup(void) {
  /* E: fork F while still in the root's session, then make its own. */
  pid_t f = fork();
  if (f == 0) {
    me = "stayer";
    serve();
  }
  dprintf(pipefd[1], "%d\n", f);
  setsid();
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  if (pipe(pipefd)) return 3;

  pid_t a = spawn("never", daemon_setup);
  waitpid(a, 0, 0);
  char line[32] = {0};
  int n = 0;
  while (n < (int)sizeof line - 1 && read(pipefd[0], line + n, 1) == 1 && line[n] != '\n') n++;
  pid_t daemon = atoi(line);
  /* A is gone, so B is ours now: it exits once D is forked. */
  waitpid(-1, 0, 0);

  leader = spawn("leader", leader_setup);
  setpgid(leader, leader);
  pid_t member = spawn("member", member_setup);
  setpgid(member, leader);
  nap(50);
  kill(leader, SIGKILL);
  waitpid(leader, 0, 0);

  pid_t late = spawn("late", late_setup);
  memset(line, 0, sizeof line);
  n = 0;
  while (n < (int)sizeof line - 1 && read(pipefd[0], line + n, 1) == 1 && line[n] != '\n') n++;
  pid_t stayer = atoi(line);
  nap(50);
  dprintf(log_fd, "ready root=%d daemon=%d daemon_sid=%d member=%d leader=%d late=%d stayer=%d\n", getpid(),
          daemon, getsid(daemon), member, leader, late, stayer);
  serve();
}
