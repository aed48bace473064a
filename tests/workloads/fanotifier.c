/* fanotifier DIR MNT: two fanotify groups. The first (FAN_CLASS_NOTIF,
 * events with fds) has an inode mark on MNT/f (FAN_MODIFY, FAN_CLOSE_WRITE),
 * a mount mark on MNT (FAN_OPEN) and an ignore mark on MNT/ign (FAN_OPEN,
 * surviving modification); the second (FAN_REPORT_FID, non-blocking) a
 * filesystem mark on MNT (FAN_CREATE | FAN_ONDIR). Logs "ready" to DIR/log,
 * then every event: "ev mask=HEX path=PATH" and "fid mask=HEX".
 * noread: reads nothing after "ready". perm: a third group
 * (FAN_CLASS_CONTENT) takes FAN_OPEN_PERM on MNT/g, answering FAN_ALLOW. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/fanotify.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[1]);
  FILE *logf = fopen(path, "a");
  if (!logf) return 1;
  setvbuf(logf, NULL, _IOLBF, 0);
  int g = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC, O_RDONLY | O_LARGEFILE);
  int h = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_NONBLOCK, O_RDONLY);
  if (g < 0 || h < 0) return 1;
  char f[4096], ign[4096];
  snprintf(f, sizeof f, "%s/f", argv[2]);
  snprintf(ign, sizeof ign, "%s/ign", argv[2]);
  if (fanotify_mark(g, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, f) ||
      fanotify_mark(g, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN, AT_FDCWD, argv[2]) ||
      fanotify_mark(g, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY,
                    FAN_OPEN, AT_FDCWD, ign) ||
      fanotify_mark(h, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_CREATE | FAN_ONDIR, AT_FDCWD,
                    argv[2])) {
    fprintf(logf, "mark failed: %s\n", strerror(errno));
    return 1;
  }
  const char *mode = argc > 3 ? argv[3] : "";
  int c = -1;
  if (strcmp(mode, "perm") == 0) {
    char g2[4096];
    snprintf(g2, sizeof g2, "%s/g", argv[2]);
    c = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY);
    if (c < 0 || fanotify_mark(c, FAN_MARK_ADD, FAN_OPEN_PERM, AT_FDCWD, g2)) return 1;
  }
  fprintf(logf, "ready\n");
  if (strcmp(mode, "noread") == 0) {
    for (;;) pause();
  }
  char buf[8192] __attribute__((aligned(8)));
  for (;;) {
    struct pollfd p[3] = {{.fd = g, .events = POLLIN}, {.fd = h, .events = POLLIN},
                          {.fd = c, .events = POLLIN}};
    if (poll(p, 3, -1) < 0) {
      if (errno == EINTR) continue;
      fprintf(logf, "poll failed: %s\n", strerror(errno));
      return 1;
    }
    if (p[0].revents & POLLIN) {
      ssize_t n = read(g, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return 1;
      for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
        char link[64], target[4096] = "";
        snprintf(link, sizeof link, "/proc/self/fd/%d", m->fd);
        ssize_t l = m->fd >= 0 ? readlink(link, target, sizeof target - 1) : -1;
        target[l > 0 ? l : 0] = 0;
        fprintf(logf, "ev mask=%llx path=%s\n", (unsigned long long)m->mask, target);
        if (m->fd >= 0) close(m->fd);
      }
    }
    if (p[1].revents & POLLIN) {
      ssize_t n = read(h, buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) return 1;
      for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n))
        fprintf(logf, "fid mask=%llx\n", (unsigned long long)m->mask);
    }
    if (p[2].revents & POLLIN) {
      ssize_t n = read(c, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return 1;
      for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
        struct fanotify_response r = {.fd = m->fd, .response = FAN_ALLOW};
        if (write(c, &r, sizeof r) != sizeof r) return 1;
        close(m->fd);
        fprintf(logf, "perm mask=%llx\n", (unsigned long long)m->mask);
      }
    }
  }
}
