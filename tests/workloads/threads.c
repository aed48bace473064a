/* A process with 8 pthreads: 7 bump their own counter, one waits on a condition
 * variable until the main thread signals it (on SIGUSR2). SIGUSR1 makes the main
 * thread append the threads' TIDs and counters to LOG.
 * usage: threads LOG */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define N 8
static volatile uint64_t counters[N];
static volatile pid_t tids[N];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int go;
static volatile sig_atomic_t want_report, want_wake;
static int log_fd;

static void on_usr1(int s) { (void)s; want_report = 1; }
static void on_usr2(int s) { (void)s; want_wake = 1; }

static void nap(long ms) {
  struct timespec ts = {0, ms * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {}
}

static void *worker(void *arg) {
  int i = (int)(intptr_t)arg;
  tids[i] = gettid();
  if (i == N - 1) {
    pthread_mutex_lock(&mu);
    while (!go) pthread_cond_wait(&cv, &mu); /* blocked here across the dump */
    pthread_mutex_unlock(&mu);
    dprintf(log_fd, "woken tid=%d\n", gettid());
  }
  for (;;) {
    counters[i]++;
    nap(1);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  log_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0600);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &set, 0); /* workers keep them blocked */
  pthread_t t[N];
  for (int i = 1; i < N; i++) pthread_create(&t[i], 0, worker, (void *)(intptr_t)i);
  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  pthread_sigmask(SIG_UNBLOCK, &set, 0);
  tids[0] = gettid();
  dprintf(log_fd, "start pid=%d\n", getpid());
  for (;;) {
    counters[0]++;
    if (want_report) {
      want_report = 0;
      char line[1024];
      int n = snprintf(line, sizeof line, "report");
      for (int i = 0; i < N; i++) n += snprintf(line + n, sizeof line - n, " %d:%llu", tids[i], (unsigned long long)counters[i]);
      dprintf(log_fd, "%s\n", line);
    }
    if (want_wake) {
      want_wake = 0;
      pthread_mutex_lock(&mu);
      go = 1;
      pthread_cond_signal(&cv);
      pthread_mutex_unlock(&mu);
    }
    nap(2);
  }
}
