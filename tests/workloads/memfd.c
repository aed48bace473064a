/* memfd DIR: memfds and POSIX shared memory shared by fds and mappings of a
 * parent and its child.
 *   A  memfd "ckpt-a" (sealable), 1 MiB with holes (data in pages 0, 2 and
 *      128), mapped shared twice, privately once (page 0 copied-on-write),
 *      reopened O_RDONLY at offset 100, sealed F_SEAL_SHRINK|F_SEAL_GROW;
 *      the child reopens it O_RDWR and writes through that.
 *   B  memfd "ckpt-b" sealed F_SEAL_WRITE|SHRINK|GROW|SEAL, mapped shared
 *      read-only.
 *   C  memfd "ckpt-c" mapped shared writable, then F_SEAL_FUTURE_WRITE.
 *   S1 shm_open + shm_unlink, the fd kept, mapped by parent and child.
 *   S2 shm_open + shm_unlink, the fd closed: only the mappings hold it.
 * On SIGUSR1 the parent runs one round and logs "round N" with key=value
 * results: what it writes through A's fd must show in both mappings and in
 * the child's, what the child writes (through its own open of A, into S1's
 * and S2's mappings) must show in the parent's, every seal must still refuse
 * what it refuses, and the hole layout, statfs type and names must hold. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1 << 20)
#define PG 4096

static volatile sig_atomic_t poke;
static void on_usr1(int s) { (void)s; poke = 1; }

static int a, b, c, s1, ro;
static char *a1, *a2, *ap, *bm, *cm, *s1m, *s2m;
static int to_child[2], from_child[2];

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void child(void) {
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", a);
  int mine = open(self, O_RDWR); /* its own open file description of A */
  if (mine < 0) die("child reopen");
  char r;
  while (read(to_child[0], &r, 1) == 1) {
    memcpy(s1m, a1, 32); /* what it sees through its mapping of A */
    char msg[32];
    snprintf(msg, sizeof msg, "child-%c", r);
    if (pwrite(mine, msg, strlen(msg) + 1, 2 * PG) < 0) die("child pwrite");
    (*(volatile int *)s2m)++;
    if (write(from_child[1], &r, 1) != 1) die("child reply");
  }
  _exit(0);
}

static const char *eperm(int rc) { return rc < 0 && errno == EPERM ? "ok" : "BAD"; }

static void layout(int fd, char *out, size_t len) {
  off_t at = 0, end = lseek(fd, 0, SEEK_END);
  size_t used = 0;
  out[0] = 0;
  while (at < end) {
    off_t d = lseek(fd, at, SEEK_DATA);
    if (d < 0) break;
    off_t h = lseek(fd, d, SEEK_HOLE);
    used += snprintf(out + used, len - used, "%s%ld-%ld", used ? "," : "", (long)d, (long)h);
    at = h;
  }
}

static void round_(FILE *log, int n) {
  char token[32];
  snprintf(token, sizeof token, "token-%d", n);
  if (pwrite(a, token, strlen(token) + 1, 0) < 0) die("pwrite a");
  char buf[64] = {0};
  if (pread(ro, buf, sizeof buf - 1, 0) < 0) die("read back");
  fprintf(log, "round %d fd_to_maps=%s ro=%s", n,
          strcmp(a1, token) == 0 && strcmp(a2, token) == 0 ? "ok" : "BAD",
          strcmp(buf, token) == 0 && (fcntl(ro, F_GETFL) & O_ACCMODE) == O_RDONLY &&
                  write(ro, "x", 1) < 0 && errno == EBADF
              ? "ok"
              : "BAD");
  fprintf(log, " ro_pos=%ld", (long)lseek(ro, 0, SEEK_CUR));
  /* The private mapping keeps its own page 0 and sees the file elsewhere. */
  fprintf(log, " private=%s", strcmp(ap, "private-page") == 0 &&
                                      strcmp(ap + 128 * PG, "world") == 0
                                  ? "ok"
                                  : "BAD");
  *(volatile int *)s2m = n * 10;
  char r = '0' + n;
  if (write(to_child[1], &r, 1) != 1 || read(from_child[0], &r, 1) != 1) die("child round");
  char want[32];
  snprintf(want, sizeof want, "child-%c", '0' + n);
  memset(buf, 0, sizeof buf);
  if (pread(s1, buf, 32, 0) < 0) die("read back");
  fprintf(log, " child_sees=%s child_writes=%s shm_mapping_only=%s",
          strcmp(buf, token) == 0 && strcmp(s1m, token) == 0 ? "ok" : "BAD",
          strcmp(a1 + 2 * PG, want) == 0 && strcmp(a2 + 2 * PG, want) == 0 ? "ok" : "BAD",
          *(volatile int *)s2m == n * 10 + 1 ? "ok" : "BAD");
  fprintf(log, " a_seals=0x%x a_shrink=%s a_grow=%s", fcntl(a, F_GET_SEALS),
          eperm(ftruncate(a, PG)), eperm(ftruncate(a, 2 * MIB)));
  fprintf(log, " b_seals=0x%x b_write=%s b_mmap_write=%s b_seal_sealed=%s b_content=%s",
          fcntl(b, F_GET_SEALS), eperm(write(b, "x", 1)),
          mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, b, 0) == MAP_FAILED && errno == EPERM
              ? "ok"
              : "BAD",
          eperm(fcntl(b, F_ADD_SEALS, F_SEAL_GROW)), strcmp(bm, "sealed content") == 0 ? "ok" : "BAD");
  snprintf(cm, 32, "mapped-%d", n);
  memset(buf, 0, sizeof buf);
  if (pread(c, buf, 32, 0) < 0) die("read back");
  fprintf(log, " c_seals=0x%x c_old_mapping=%s c_write=%s c_mmap_write=%s",
          fcntl(c, F_GET_SEALS), strncmp(buf, "mapped-", 7) == 0 && buf[7] == '0' + n ? "ok" : "BAD",
          eperm(pwrite(c, "x", 1, 0)),
          mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, c, 0) == MAP_FAILED && errno == EPERM
              ? "ok"
              : "BAD");
  char lay[256];
  layout(a, lay, sizeof lay);
  struct statfs sf;
  fstatfs(a, &sf);
  char link[256] = {0}, self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", a);
  if (readlink(self, link, sizeof link - 1) < 0) die("read back");
  struct stat st;
  fstat(a, &st);
  fprintf(log, " layout=%s statfs=0x%lx name=%s size=%ld\n", lay, (long)sf.f_type, link,
          (long)st.st_size);
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[1]);
  FILE *log = fopen(path, "a");
  if (!log) return 1;
  setvbuf(log, NULL, _IONBF, 0);

  a = memfd_create("ckpt-a", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  b = memfd_create("ckpt-b", MFD_ALLOW_SEALING);
  c = memfd_create("ckpt-c", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (a < 0 || b < 0 || c < 0) die("memfd_create");
  if (ftruncate(a, MIB) || ftruncate(b, PG) || ftruncate(c, PG)) die("ftruncate");
  if (pwrite(a, "hello", 6, 0) < 0 || pwrite(a, "world", 6, 128 * PG) < 0) die("pwrite");
  a1 = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
  a2 = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
  ap = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE, a, 0);
  if (a1 == MAP_FAILED || a2 == MAP_FAILED || ap == MAP_FAILED) die("mmap a");
  strcpy(ap, "private-page");
  if (pwrite(a, "page two", 9, 2 * PG) < 0) die("pwrite");
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", a);
  ro = open(self, O_RDONLY);
  if (ro < 0 || lseek(ro, 100, SEEK_SET) != 100) die("reopen a");
  if (fcntl(a, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)) die("seal a");

  if (pwrite(b, "sealed content", 15, 0) < 0) die("pwrite");
  if (fcntl(b, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) die("seal b");
  bm = mmap(NULL, PG, PROT_READ, MAP_SHARED, b, 0);
  if (bm == MAP_FAILED) die("mmap b");

  cm = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, c, 0);
  if (cm == MAP_FAILED) die("mmap c");
  if (fcntl(c, F_ADD_SEALS, F_SEAL_FUTURE_WRITE)) die("seal c");

  char name[64];
  snprintf(name, sizeof name, "/ckpt-memfd-%d-1", getpid());
  s1 = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (s1 < 0 || ftruncate(s1, PG)) die("shm_open 1");
  s1m = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, s1, 0);
  shm_unlink(name);
  snprintf(name, sizeof name, "/ckpt-memfd-%d-2", getpid());
  int s2 = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (s2 < 0 || ftruncate(s2, PG)) die("shm_open 2");
  s2m = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, s2, 0);
  shm_unlink(name);
  close(s2);
  if (s1m == MAP_FAILED || s2m == MAP_FAILED) die("mmap shm");

  if (pipe(to_child) || pipe(from_child)) die("pipe");
  pid_t kid = fork();
  if (kid < 0) die("fork");
  if (kid == 0) {
    close(to_child[1]);
    close(from_child[0]);
    child();
  }
  close(to_child[0]);
  close(from_child[1]);
  signal(SIGUSR1, on_usr1);
  fprintf(log, "start\n");
  for (int n = 1;; n++) {
    while (!poke) pause();
    poke = 0;
    round_(log, n);
  }
}
