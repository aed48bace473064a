/* Blocks in read(2) on a FIFO while a pipe holds bytes in flight.
 * usage: reader DIR — makes DIR/fifo, writes a line to DIR/log for each
 * line read from the FIFO, with the pipe's in-flight bytes on the first. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char path[4096];
  int p[2];
  if (pipe(p) != 0) return 3;
  const char inflight[] = "bytes-in-flight";
  if (write(p[1], inflight, sizeof inflight - 1) != sizeof inflight - 1) return 4;
  snprintf(path, sizeof path, "%s/fifo", argv[1]);
  mkfifo(path, 0600);
  int fifo = open(path, O_RDWR);
  snprintf(path, sizeof path, "%s/log", argv[1]);
  int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fifo < 0 || log < 0) return 5;
  dprintf(log, "ready pid=%d\n", getpid());
  for (int n = 0;; n++) {
    char buf[256];
    ssize_t got = read(fifo, buf, sizeof buf - 1); /* blocks here across the dump */
    if (got <= 0) continue;
    buf[got] = 0;
    buf[strcspn(buf, "\n")] = 0;
    char fl[64] = "";
    if (n == 0) {
      ssize_t k = read(p[0], fl, sizeof fl - 1);
      fl[k > 0 ? k : 0] = 0;
    }
    dprintf(log, "read=%s inflight=%s\n", buf, fl);
  }
}
