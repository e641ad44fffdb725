/* Realtime signals queued with sigqueue while blocked, each with its own value, then
 * unblocked: every one is delivered, in order of signal number then of queueing, with its
 * value. Then one realtime signal per number from SIGRTMIN to SIGRTMAX, raised. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int order[64];
static int values[64];
static volatile int count;

static void on_rt(int sig, siginfo_t* si, void* p) {
  (void)p;
  if (count < 64) {
    order[count] = sig - SIGRTMIN;
    values[count] = si->si_value.sival_int;
  }
  count++;
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_rt;
  sa.sa_flags = SA_SIGINFO;
  sigset_t rt;
  sigemptyset(&rt);
  for (int s = SIGRTMIN; s <= SIGRTMAX; s++) {
    sigaction(s, &sa, NULL);
    sigaddset(&rt, s);
  }
  sigprocmask(SIG_BLOCK, &rt, NULL);
  for (int i = 0; i < 6; i++) {
    union sigval v = { .sival_int = 100 + i };
    sigqueue(getpid(), SIGRTMIN + (i % 3 == 0 ? 2 : 1), v);
  }
  sigprocmask(SIG_UNBLOCK, &rt, NULL);
  printf("queued: %d delivered:", count);
  for (int i = 0; i < count; i++) printf(" RTMIN+%d=%d", order[i], values[i]);
  printf("\n");
  count = 0;
  for (int s = SIGRTMIN; s <= SIGRTMAX; s++) raise(s);
  printf("raised %d, caught %d\n", SIGRTMAX - SIGRTMIN + 1, count);
  return 0;
}
