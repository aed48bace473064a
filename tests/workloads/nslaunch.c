/* nslaunch KINDS PROG ARGS... : run PROG as the first process of new
 * namespaces of the kinds listed (comma separated: pid,uts,ipc,time,cgroup,
 * user or user-deny; a time namespace gets offsets of one and two days, a
 * user namespace maps 0-65535 to 100000-165535, PROG runs as its root, and
 * with user-deny setgroups is denied), leading its own session, and wait for
 * it (exit with its status). The test finds PROG as
 * this process's child. */
#define _GNU_SOURCE
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char stack[64 * 1024] __attribute__((aligned(16)));
static char **target;
static int go[2];
static int user;

static int start(void *arg) {
  (void)arg;
  if (user) {
    /* Wait for the maps, then be root of the user namespace. */
    char c;
    if (read(go[0], &c, 1) != 1) return 120;
    if (user == 1 && setgroups(0, NULL)) { perror("setgroups"); return 121; }
    if (setresgid(0, 0, 0) || setresuid(0, 0, 0)) { perror("setresuid"); return 122; }
  }
  setsid();
  execvp(target[0], target);
  perror("execvp");
  return 127;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int flags = SIGCHLD;
  char kinds[256];
  snprintf(kinds, sizeof kinds, "%s", argv[1]);
  for (char *k = strtok(kinds, ","); k; k = strtok(NULL, ",")) {
    if (!strcmp(k, "pid")) flags |= CLONE_NEWPID;
    else if (!strcmp(k, "uts")) flags |= CLONE_NEWUTS;
    else if (!strcmp(k, "ipc")) flags |= CLONE_NEWIPC;
    else if (!strcmp(k, "cgroup")) flags |= CLONE_NEWCGROUP;
    else if (!strcmp(k, "user")) { flags |= CLONE_NEWUSER; user = 1; }
    else if (!strcmp(k, "user-deny")) { flags |= CLONE_NEWUSER; user = 2; }
    else if (!strcmp(k, "time")) {
      /* Offsets can be set only before anyone is in it: unshare, write, fork. */
      if (unshare(CLONE_NEWTIME)) { perror("unshare time"); return 3; }
      FILE *f = fopen("/proc/self/timens_offsets", "w");
      if (!f || fprintf(f, "monotonic 86400 0\nboottime 172800 0\n") < 0 || fclose(f)) {
        perror("timens_offsets");
        return 3;
      }
    } else {
      fprintf(stderr, "unknown kind %s\n", k);
      return 2;
    }
  }
  target = argv + 2;
  if (pipe(go)) return 4;
  pid_t p = clone(start, stack + sizeof stack, flags, NULL);
  if (p < 0) { perror("clone"); return 4; }
  if (user) {
    /* Root of the namespace is uid and gid 100000 here, 65536 ids mapped. */
    const char *files[3] = {"setgroups", "uid_map", "gid_map"};
    const char *text[3] = {user == 2 ? "deny" : "allow", "0 100000 65536\n", "0 100000 65536\n"};
    for (int i = 0; i < 3; i++) {
      char path[64];
      snprintf(path, sizeof path, "/proc/%d/%s", p, files[i]);
      FILE *f = fopen(path, "w");
      if (!f || fputs(text[i], f) < 0 || fclose(f)) { perror(path); return 5; }
    }
    if (write(go[1], "g", 1) != 1) return 6;
  }
  int st;
  while (waitpid(p, &st, 0) < 0) {}
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
