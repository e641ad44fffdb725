/* Two threads take turns by sched_yield, each counting the turns where the other did not run
 * since its own last one. The kernel's scheduler promises nothing here (natively turns are
 * sometimes skipped); the recorder's scheduler hands the CPU at every yield to the task that
 * has waited longest for it, as rr's does, and keeps it with a thread whose futex wake cannot
 * block, so a recording alternates strictly.
 *
 * The first turn is decided inside pthread_once, whose initializer yields until the other
 * thread waits for it: its completion then wakes that thread (a FUTEX_WAKE) before the
 * initializing thread takes its own first turn. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>

static volatile int last = -1;
static volatile int arrived[2];
static volatile int initializer = -1;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int violations;
static __thread int me;

static void first_turn(void) {
  initializer = me;
  /* Let the other thread reach pthread_once and wait there. */
  for (int i = 0; i < 20; i++)
    sched_yield();
  last = 1 - me;
}

static void *take_turns(void *arg) {
  me = (int)(long)arg;
  arrived[me] = 1;
  while (!arrived[1 - me])
    sched_yield();
  pthread_once(&once, first_turn);
  for (int i = 0; i < 40; i++) {
    if (last == me)
      __atomic_add_fetch(&violations, 1, __ATOMIC_RELAXED);
    last = me;
    sched_yield();
  }
  return NULL;
}

int main(void) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu(), &one);
  sched_setaffinity(0, sizeof(one), &one);
  pthread_t t;
  pthread_create(&t, NULL, take_turns, (void *)1L);
  take_turns((void *)0L);
  pthread_join(t, NULL);
  printf("violations=%d\n", violations);
  return violations != 0;
}
