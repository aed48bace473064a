/* swapper DIR NAME TARGET: the attacker of tests/authority_test.ts. Watches
 * DIR with inotify and, the moment NAME is created there (a socket ckpt has
 * just bound), renames a ready symlink to TARGET over it, hoping to land
 * between the bind and whatever ckpt does next by path (chown, chmod). Runs
 * until killed; touches DIR/armed once it is watching. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  char link[PATH_MAX], name[PATH_MAX], armed[PATH_MAX];
  snprintf(link, sizeof link, "%s/.swap", argv[1]);
  snprintf(name, sizeof name, "%s/%s", argv[1], argv[2]);
  snprintf(armed, sizeof armed, "%s/armed", argv[1]);
  int in = inotify_init1(0);
  if (in < 0 || inotify_add_watch(in, argv[1], IN_CREATE) < 0) return 3;
  if (symlink(argv[3], link) != 0) return 4;
  close(open(armed, O_WRONLY | O_CREAT, 0644));
  char buf[65536] __attribute__((aligned(8)));
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n <= 0) continue;
    for (char *p = buf; p < buf + n;) {
      struct inotify_event *e = (struct inotify_event *)p;
      if (e->len && strcmp(e->name, argv[2]) == 0) {
        rename(link, name);
        if (symlink(argv[3], link) != 0) continue;
      }
      p += sizeof *e + e->len;
    }
  }
}
