/* Multi-threaded workload for scripts/bench: threads ROUNDS WORK.
 * Four threads pass a token around a ring (one mutex, a condition variable per thread) ROUNDS
 * times each, so every hand-off wakes the next thread through a futex; between turns each
 * thread computes WORK iterations of an xorshift mix on its own and adds to a counter behind a
 * second, shared mutex. The output depends only on the arguments: the ring fixes the order in
 * which the threads fold their results in. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define NTHREADS 4

static pthread_mutex_t ring = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake[NTHREADS];
static int turn;
static uint64_t acc = 1;

static pthread_mutex_t stats = PTHREAD_MUTEX_INITIALIZER;
static uint64_t counter;

static long rounds, work;

static void *run(void *arg) {
    int me = (int)(intptr_t)arg;
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(me + 1);
    for (long r = 0; r < rounds; r++) {
        for (long i = 0; i < work; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x += (uint64_t)i;
        }
        pthread_mutex_lock(&stats);
        counter += x & 0xff;
        pthread_mutex_unlock(&stats);

        pthread_mutex_lock(&ring);
        while (turn != me) pthread_cond_wait(&wake[me], &ring);
        acc = acc * 31 + (x & 0xffff);
        turn = (me + 1) % NTHREADS;
        pthread_cond_signal(&wake[turn]);
        pthread_mutex_unlock(&ring);
    }
    return NULL;
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? strtol(argv[1], NULL, 0) : 500;
    work = argc > 2 ? strtol(argv[2], NULL, 0) : 100000;
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) pthread_cond_init(&wake[i], NULL);
    for (int i = 0; i < NTHREADS; i++) {
        if (pthread_create(&t[i], NULL, run, (void *)(intptr_t)i) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    for (int i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
    printf("threads %d rounds %ld work %ld -> %016llx %llu\n", NTHREADS, rounds, work,
           (unsigned long long)acc, (unsigned long long)counter);
    return 0;
}
