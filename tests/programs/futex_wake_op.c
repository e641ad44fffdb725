/* A thread wakes the main thread with FUTEX_WAKE_OP, whose operation sets a flag the woken
 * thread reads at once: the flag's write must be seen in replay as it was recorded, although
 * the main thread's wait returns before the waker's call ends. Repeated to give the scheduler
 * several chances. */
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile int word;
static volatile int flag;

static void *waker(void *arg) {
  (void)arg;
  struct timespec ts = {0, 2000000};
  /* Let the main thread reach its wait first. */
  nanosleep(&ts, NULL);
  long woken = syscall(SYS_futex, &word, FUTEX_WAKE_OP, 1, NULL, &flag,
                       FUTEX_OP(FUTEX_OP_SET, 1, FUTEX_OP_CMP_EQ, 0));
  printf("waker: woke %ld\n", woken);
  fflush(stdout);
  return NULL;
}

int main(void) {
  for (int round = 0; round < 5; round++) {
    word = 0;
    flag = 0;
    pthread_t t;
    if (pthread_create(&t, NULL, waker, NULL) != 0)
      return 2;
    long r = syscall(SYS_futex, &word, FUTEX_WAIT, 0, NULL, NULL, 0);
    /* The flag is read right after the wait returns. */
    int seen = flag;
    printf("round %d: wait=%ld flag=%d\n", round, r, seen);
    fflush(stdout);
    pthread_join(t, NULL);
    if (r == 0 && seen != 1)
      return 1;
  }
  return 0;
}
