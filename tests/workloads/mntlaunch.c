/* mntlaunch ROOTFS HOSTDIR PROG ARGS... : run PROG as the init of new PID,
 * mount, UTS and IPC namespaces, in a container made the way runc makes
 * one: ROOTFS bound as the root (read-only in the end), proc (with /proc/sys
 * bound read-only over itself and /proc/keys masked by the container's
 * /dev/null), a tmpfs /dev with device nodes, a symlink and a file,
 * devpts at /dev/pts, a tmpfs /dev/shm, mqueue at /dev/mqueue, sysfs
 * read-only at /sys, a read-only empty tmpfs at /sys/firmware, a tmpfs /tmp,
 * HOSTDIR bound at /data; host name "ckpt-box". Waits for PROG (exits with
 * its status). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static char stack[64 * 1024] __attribute__((aligned(16)));
static char **target;
static const char *rootfs, *hostdir;

static void die(const char *what) {
  perror(what);
  _exit(100);
}

static void at(char *buf, const char *rel) { snprintf(buf, 4096, "%s%s", rootfs, rel); }

static void mnt(const char *src, const char *rel, const char *type, unsigned long flags,
                const char *data) {
  char p[4096];
  at(p, rel);
  mkdir(p, 0755);
  if (mount(src, p, type, flags, data)) die(rel);
}

static int start(void *arg) {
  (void)arg;
  char p[4096], q[4096];
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) die("private");
  if (mount(rootfs, rootfs, NULL, MS_BIND, NULL)) die("bind root");
  mnt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mnt("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
  at(p, "/dev/null");
  if (mknod(p, S_IFCHR | 0666, makedev(1, 3))) die("mknod null");
  chmod(p, 0666);
  at(p, "/dev/zero");
  if (mknod(p, S_IFCHR | 0666, makedev(1, 5))) die("mknod zero");
  chmod(p, 0666);
  at(p, "/dev/fd");
  if (symlink("/proc/self/fd", p)) die("symlink fd");
  at(p, "/dev/note");
  FILE *f = fopen(p, "w");
  if (!f || fputs("made by mntlaunch\n", f) < 0 || fclose(f)) die("note");
  chmod(p, 0640);
  mnt("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
      "newinstance,ptmxmode=0666,mode=0620,gid=5");
  mnt("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
  mnt("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mnt("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL);
  mnt("tmpfs", "/sys/firmware", "tmpfs", MS_RDONLY, NULL);
  mnt("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m");
  mnt(hostdir, "/data", NULL, MS_BIND, NULL);
  /* /proc/sys read-only over itself, /proc/keys masked, as runc does. */
  at(p, "/proc/sys");
  if (mount(p, p, NULL, MS_BIND, NULL)) die("bind sys");
  if (mount(NULL, p, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL)) die("ro sys");
  at(p, "/dev/null");
  at(q, "/proc/keys");
  if (mount(p, q, NULL, MS_BIND, NULL)) die("mask keys");
  if (sethostname("ckpt-box", 8)) die("sethostname");
  if (chdir(rootfs)) die("chdir");
  if (syscall(SYS_pivot_root, ".", ".")) die("pivot_root");
  if (umount2(".", MNT_DETACH)) die("umount old root");
  if (chdir("/")) die("chdir /");
  if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL)) die("ro root");
  setsid();
  execv(target[0], target);
  die("execv");
  return 127;
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  rootfs = argv[1];
  hostdir = argv[2];
  target = argv + 3;
  pid_t p = clone(start, stack + sizeof stack,
                  CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD, NULL);
  if (p < 0) {
    perror("clone");
    return 4;
  }
  int st;
  while (waitpid(p, &st, 0) < 0) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
