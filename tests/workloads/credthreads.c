/* Threads with credentials of their own, as raw set*id calls make them (glibc
 * would change every thread). usage: credthreads LOG UID GID
 *   main stays root; "user" becomes UID/GID with one extra group GID+1;
 *   "mixed" keeps real uid 0 but runs with effective uid UID; "capped" stays
 *   uid 0 with only CAP_NET_BIND_SERVICE.
 * On SIGUSR1 every thread logs "cred NAME tid=.. Uid=.. Gid=.. Groups=..
 * CapEff=.." from its own /proc/self/task/TID/status, and keeps counting. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int log_fd;
static unsigned uid, gid;
static volatile int gen;
static volatile sig_atomic_t want;
static void on_usr1(int s) { (void)s; want = 1; }

static void field(const char *buf, const char *key, char *out, size_t cap) {
  const char *p = strstr(buf, key);
  out[0] = 0;
  if (!p) return;
  p += strlen(key);
  while (*p == ' ' || *p == '\t') p++;
  size_t n = 0;
  while (p[n] && p[n] != '\n' && n + 1 < cap) {
    out[n] = p[n] == '\t' ? ' ' : p[n];
    n++;
  }
  out[n] = 0;
}

static void report(const char *name) {
  char path[64], buf[4096], u[64], g[64], gr[128], c[32];
  long tid = syscall(SYS_gettid);
  snprintf(path, sizeof path, "/proc/self/task/%ld/status", tid);
  int fd = open(path, O_RDONLY);
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  buf[n > 0 ? n : 0] = 0;
  field(buf, "Uid:", u, sizeof u);
  field(buf, "Gid:", g, sizeof g);
  field(buf, "Groups:", gr, sizeof gr);
  field(buf, "CapEff:", c, sizeof c);
  dprintf(log_fd, "cred %s tid=%ld Uid=%s Gid=%s Groups=%s CapEff=%s\n", name, tid, u, g, gr, c);
}

static void loop(const char *name) {
  int seen = 0;
  for (;;) {
    if (gen != seen) {
      seen = gen;
      report(name);
    }
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, 0);
  }
}

static void *user_main(void *a) {
  (void)a;
  gid_t extra = gid + 1;
  if (syscall(SYS_setgroups, 1, &extra) || syscall(SYS_setresgid, gid, gid, gid) ||
      syscall(SYS_setresuid, uid, uid, uid))
    _exit(10);
  loop("user");
  return 0;
}

static void *mixed_main(void *a) {
  (void)a;
  if (syscall(SYS_setresuid, 0, uid, 0)) _exit(11);
  loop("mixed");
  return 0;
}

static void *capped_main(void *a) {
  (void)a;
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2] = {{1u << CAP_NET_BIND_SERVICE, 1u << CAP_NET_BIND_SERVICE, 0}, {0, 0, 0}};
  if (syscall(SYS_capset, &h, d)) _exit(12);
  loop("capped");
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
  uid = strtoul(argv[2], 0, 10);
  gid = strtoul(argv[3], 0, 10);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, 0);
  pthread_t t;
  pthread_create(&t, 0, user_main, 0);
  pthread_create(&t, 0, mixed_main, 0);
  pthread_create(&t, 0, capped_main, 0);
  signal(SIGUSR1, on_usr1);
  pthread_sigmask(SIG_UNBLOCK, &set, 0);
  dprintf(log_fd, "start pid=%d\n", getpid());
  int seen = 0;
  for (;;) {
    if (want) {
      want = 0;
      gen++;
    }
    if (gen != seen) {
      seen = gen;
      report("main");
    }
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, 0);
  }
}
