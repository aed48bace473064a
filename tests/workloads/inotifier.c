/* inotifier DIR [noread|watchheld]: watches in DIR/w with a gap in their
 * wds — w itself (its cwd, every event), w/b, w/d (one-shot), w/e, then w/f
 * after 100 watches added and removed — logs "wds ..." to DIR/log, then logs
 * every event it reads ("ev wd=N mask=HEX name=NAME"). It also holds w/held
 * open. noread: it reads nothing after "ready", so events stay queued.
 * watchheld: w/held is watched too (IN_MODIFY), as wd 108. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

static FILE *logf;

static void log_events(const char *buf, ssize_t n) {
  for (const char *p = buf; p < buf + n;) {
    const struct inotify_event *e = (const struct inotify_event *)p;
    fprintf(logf, "ev wd=%d mask=%x name=%s\n", e->wd, e->mask, e->len ? e->name : "");
    p += sizeof *e + e->len;
  }
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[1]);
  logf = fopen(path, "a");
  if (!logf) return 1;
  setvbuf(logf, NULL, _IOLBF, 0);
  snprintf(path, sizeof path, "%s/w", argv[1]);
  if (chdir(path)) return 1;
  int in = inotify_init1(IN_NONBLOCK);
  /* Opened after the instance: restore opens it after the instance too,
   * in a watched directory. */
  int held = open("held", O_RDONLY);
  if (held < 0 || in < 0) return 1;
  int w = inotify_add_watch(in, ".", IN_ALL_EVENTS);
  int a = inotify_add_watch(in, "a", IN_CREATE | IN_DELETE);
  int b = inotify_add_watch(in, "b", IN_MODIFY | IN_CLOSE_WRITE);
  int c = inotify_add_watch(in, "c", IN_CREATE);
  int d = inotify_add_watch(in, "d", IN_ATTRIB | IN_ONESHOT);
  int e = inotify_add_watch(in, "e", IN_CREATE | IN_MOVED_TO | IN_EXCL_UNLINK);
  if (inotify_rm_watch(in, a) || inotify_rm_watch(in, c)) return 1;
  for (int i = 0; i < 100; i++) {
    int x = inotify_add_watch(in, "c", IN_CREATE);
    if (x < 0 || inotify_rm_watch(in, x)) return 1;
  }
  int f = inotify_add_watch(in, "f", IN_CREATE);
  if (w < 0 || b < 0 || d < 0 || e < 0 || f < 0) return 1;
  const char *mode = argc > 2 ? argv[2] : "";
  if (strcmp(mode, "watchheld") == 0 && inotify_add_watch(in, "held", IN_MODIFY) != 108) return 1;
  char buf[65536] __attribute__((aligned(8)));
  ssize_t n;
  int ignored = 0;
  while ((n = read(in, buf, sizeof buf)) > 0) {
    for (char *p = buf; p < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      if (ev->mask & IN_IGNORED) ignored++;
      p += sizeof *ev + ev->len;
    }
  }
  fprintf(logf, "wds %d %d %d %d %d ignored %d\n", w, b, d, e, f, ignored);
  fcntl(in, F_SETFL, 0);
  fprintf(logf, "ready\n");
  if (strcmp(mode, "noread") == 0) {
    for (;;) pause();
  }
  for (;;) {
    n = read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      fprintf(logf, "read failed: %s\n", n < 0 ? strerror(errno) : "eof");
      return 1;
    }
    log_events(buf, n);
  }
}
