/* Four threads meet at a barrier, then take turns by sched_yield (no shared data, no output
 * until the end): the order in which a recorder runs them after the barrier is all its
 * scheduling decisions. Prints a summary line. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>

static pthread_barrier_t start;

static void *turns(void *arg) {
    (void)arg;
    pthread_barrier_wait(&start);
    for (int i = 0; i < 30; i++) sched_yield();
    return NULL;
}

int main(void) {
    pthread_t t[4];
    pthread_barrier_init(&start, NULL, 4);
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, turns, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("yield_order: done\n");
    return 0;
}
