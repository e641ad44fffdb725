/* A racy, unsynchronised counter incremented by several threads.
 *
 * argv[1] threads (default 4) each increment a shared `volatile long` argv[2] times (default
 * 4000000) with a plain read-modify-write: load it, compute a little (32 rounds of a multiply in
 * registers, so a thread spends most of its time between its load and its store), store the
 * loaded value plus one. No atomic, no lock, no syscall. Whenever a thread loses the CPU (or the
 * cache line) between its load and its store, the increments other threads made meanwhile are
 * lost. The program prints the expected total, the final value and how many updates were lost;
 * how many is pure timing, so native runs print different values. About 60 ms of work per
 * thread (0.3 to 0.5 s natively on two cores, where the threads also fight for the cache line),
 * enough for a recorder with a 10 to 20 ms time slice to preempt each thread a few times.
 *
 * Under a recorder that runs one task at a time, updates are lost only where it preempted a
 * thread between its load and its store (nearly every preemption, given the computation in
 * between); the replay must preempt at exactly those instructions to print the recorded total. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_THREADS 16

static volatile long counter;
static long per_thread = 4000000;

static void *bump(void *arg) {
    (void)arg;
    for (long i = 0; i < per_thread; i++) {
        long v = counter;
        unsigned long h = (unsigned long)v;
        for (int k = 0; k < 32; k++) {
            h = h * 6364136223846793005UL + 1442695040888963407UL;
            __asm__ volatile("" : "+r"(h)); /* keep the computation */
        }
        counter = v + 1;
    }
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 4;
    per_thread = argc > 2 ? atol(argv[2]) : 4000000;
    if (n < 1 || n > MAX_THREADS || per_thread < 1) {
        fprintf(stderr, "usage: racy_counter [threads 1..%d] [increments per thread]\n",
                MAX_THREADS);
        return 2;
    }
    pthread_t t[MAX_THREADS];
    for (int i = 0; i < n; i++) {
        if (pthread_create(&t[i], NULL, bump, NULL) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    long expected = (long)n * per_thread;
    printf("racy_counter: %d threads x %ld increments: expected %ld, final %ld, lost %ld\n", n,
           per_thread, expected, counter, expected - counter);
    return 0;
}
