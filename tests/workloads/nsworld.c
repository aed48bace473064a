/* A "container" workload: run as the init of new PID, UTS and IPC namespaces.
 * usage: nsworld DIR
 * Sets a host and domain name; makes System V shared memory (segment A, keyed,
 * attached in two parts with different protections and by a child too;
 * segment B, private, attached and marked removed; segment C, keyed, never
 * attached), a semaphore set, a System V message queue with three messages and
 * a POSIX message queue with four (kept open); forks a child that bumps a
 * counter in segment A. Appends to DIR/log: "ready" once set up; on SIGUSR1 a
 * report line (the child's is asked through a pipe); on SIGUSR2 it takes every
 * message of both queues, detaches segment B and reports what it got. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdarg.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY_A 0x6b707431
#define KEY_C 0x6b707433
#define KEY_SEM 0x6b707432
#define KEY_MSG 0x6b707434
#define SIZE_A (256 * 1024)
#define SIZE_B (64 * 1024)

static volatile sig_atomic_t want_report, want_drain;
static void on_usr1(int s) { (void)s; want_report = 1; }
static void on_usr2(int s) { (void)s; want_drain = 1; }

static int logfd;
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (write(logfd, buf, n) != n) _exit(9);
}

static uint32_t sum(const unsigned char *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  setsid();
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[1]);
  logfd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (logfd < 0) return 3;
  if (sethostname("ckpt-box", 8) || setdomainname("ckpt.example", 12)) return 4;

  int ida = shmget(KEY_A, SIZE_A, IPC_CREAT | IPC_EXCL | 0640);
  int idb = shmget(IPC_PRIVATE, SIZE_B, IPC_CREAT | 0600);
  int idc = shmget(KEY_C, 8192, IPC_CREAT | IPC_EXCL | 0604);
  if (ida < 0 || idb < 0 || idc < 0) return 5;
  unsigned char *a = shmat(ida, NULL, 0);
  unsigned char *b = shmat(idb, NULL, 0);
  char *c = shmat(idc, NULL, 0);
  if (a == (void *)-1 || b == (void *)-1 || c == (void *)-1) return 6;
  for (size_t i = 16; i < SIZE_A; i++) a[i] = (unsigned char)(i * 7 + (i >> 9));
  memset(a + SIZE_A - 8192, 0, 4096); /* a zero page in the middle of data */
  for (size_t i = 0; i < SIZE_B; i++) b[i] = (unsigned char)(i ^ 0x5a);
  strcpy(c, "unattached segment");
  shmdt(c);
  /* The last page read-only: the attach is two mappings now. */
  if (mprotect(a + SIZE_A - 4096, 4096, PROT_READ)) return 7;
  if (shmctl(idb, IPC_RMID, NULL)) return 8;

  int sem = semget(KEY_SEM, 3, IPC_CREAT | IPC_EXCL | 0600);
  unsigned short vals[3] = {3, 7, 11};
  if (sem < 0 || semctl(sem, 0, SETALL, vals)) return 10;

  int mq = msgget(KEY_MSG, IPC_CREAT | IPC_EXCL | 0620);
  if (mq < 0) return 11;
  const char *texts[3] = {"one", "two", "three"};
  const long types[3] = {1, 2, 1};
  for (int i = 0; i < 3; i++) {
    struct { long t; char s[16]; } m = {types[i], ""};
    strcpy(m.s, texts[i]);
    if (msgsnd(mq, &m, strlen(texts[i]), IPC_NOWAIT)) return 12;
  }

  struct mq_attr attr = {.mq_maxmsg = 8, .mq_msgsize = 128};
  mqd_t q = mq_open("/ckq", O_CREAT | O_EXCL | O_RDWR | O_NONBLOCK, 0640, &attr);
  if (q < 0) return 13;
  const char *mtexts[4] = {"low", "high", "mid", "high2"};
  const unsigned prios[4] = {1, 9, 5, 9};
  for (int i = 0; i < 4; i++) {
    if (mq_send(q, mtexts[i], strlen(mtexts[i]), prios[i])) return 14;
  }

  int ask[2], answer[2];
  if (pipe(ask) || pipe(answer)) return 15;
  pid_t kid = fork();
  if (kid < 0) return 16;
  if (kid == 0) {
    volatile uint64_t *ca = shmat(ida, NULL, 0);
    if (ca == (void *)-1) _exit(17);
    fcntl(ask[0], F_SETFL, O_NONBLOCK);
    for (;;) {
      ca[1]++;
      char x;
      if (read(ask[0], &x, 1) == 1) {
        char line[64];
        int n = snprintf(line, sizeof line, "%d %d\n", getpid(), getppid());
        if (write(answer[1], line, n) != n) _exit(18);
      }
      struct timespec ts = {0, 10 * 1000000L};
      nanosleep(&ts, NULL);
    }
  }

  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  say("ready pid=%d kid=%d\n", getpid(), kid);
  for (;;) {
    pause();
    if (want_report) {
      want_report = 0;
      char host[65] = "", dom[65] = "";
      gethostname(host, sizeof host);
      if (getdomainname(dom, sizeof dom)) strcpy(dom, "?");
      unsigned short got[3] = {0, 0, 0};
      semctl(sem, 0, GETALL, got);
      struct msqid_ds md;
      msgctl(mq, IPC_STAT, &md);
      struct mq_attr qa;
      mq_getattr(q, &qa);
      struct shmid_ds sd;
      shmctl(ida, IPC_STAT, &sd);
      char kidline[64] = "";
      if (write(ask[1], "?", 1) == 1) {
        int n = read(answer[0], kidline, sizeof kidline - 1);
        if (n > 0) kidline[n - 1] = 0;
      }
      int idc2 = shmget(KEY_C, 0, 0);
      char *c2 = idc2 >= 0 ? shmat(idc2, NULL, SHM_RDONLY) : (void *)-1;
      say("report pid=%d ppid=%d host=%s dom=%s ida=%d suma=%08x counter=%lu nattch=%lu "
          "idb=%d sumb=%08x idc=%d c=%s sem=%d:%d,%d,%d msq=%d qnum=%lu mqcur=%ld "
          "kid=%d kidsays=%s mono=%ld\n",
          getpid(), getppid(), host, dom, ida, sum(a + 16, SIZE_A - 16),
          (unsigned long)((volatile uint64_t *)a)[1], (unsigned long)sd.shm_nattch, idb,
          sum(b, SIZE_B), idc2, c2 == (void *)-1 ? "-" : c2, sem, got[0], got[1], got[2], mq,
          (unsigned long)md.msg_qnum, qa.mq_curmsgs, kid, kidline, mono_ms());
      if (c2 != (void *)-1) shmdt(c2);
    }
    if (want_drain) {
      want_drain = 0;
      char msgs[256] = "", mqs[256] = "";
      for (;;) {
        struct { long t; char s[64]; } m;
        ssize_t n = msgrcv(mq, &m, sizeof m.s - 1, 0, IPC_NOWAIT);
        if (n < 0) break;
        m.s[n] = 0;
        snprintf(msgs + strlen(msgs), sizeof msgs - strlen(msgs), "%ld:%s,", m.t, m.s);
      }
      for (;;) {
        char buf[128];
        unsigned prio;
        ssize_t n = mq_receive(q, buf, sizeof buf, &prio);
        if (n < 0) break;
        buf[n] = 0;
        snprintf(mqs + strlen(mqs), sizeof mqs - strlen(mqs), "%u:%s,", prio, buf);
      }
      int dt = shmdt(b);
      int gone = shmctl(idb, IPC_STAT, &(struct shmid_ds){0}) < 0 ? errno : 0;
      say("drain msgs=%s mq=%s shmdt=%d bgone=%d\n", msgs, mqs, dt, gone);
    }
  }
}
