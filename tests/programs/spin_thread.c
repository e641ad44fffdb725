/* A thread that computes for seconds without a single syscall while another thread waits.
 *
 * The main thread names itself "spinner" (PR_SET_NAME), prints its tid, starts a worker (named
 * "sleeper") that sleeps 20 ms and then prints a line, and then spins through argv[1] iterations
 * (default 4.5 billion, about 4 s natively on the 2-core machine it was written on; the test
 * measures the machine's speed and passes a count for about 4 s) of a loop on a volatile
 * variable the compiler cannot remove, without any syscall. Then it prints the result and how
 * long the loop took (clock_gettime around it), and joins the worker.
 *
 * A recorder that runs one task at a time must preempt the spinner to let the sleeper run while
 * it computes (the sleeper's line comes first), and the replay must reach the same preemption
 * points. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void *sleeper(void *arg) {
    (void)arg;
    prctl(PR_SET_NAME, "sleeper", 0, 0, 0);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    printf("sleeper: woke up\n");
    return NULL;
}

int main(int argc, char **argv) {
    unsigned long long n = argc > 1 ? strtoull(argv[1], NULL, 0) : 4500000000ULL;
    prctl(PR_SET_NAME, "spinner", 0, 0, 0);
    printf("spinner tid %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    pthread_t t;
    pthread_create(&t, NULL, sleeper, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    volatile unsigned long long x = 0x9e3779b97f4a7c15ULL;
    for (unsigned long long i = 0; i < n; i++) x = (x ^ (x >> 7)) + i;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("spinner: %llu iterations -> %016llx in %.3f s\n", n, (unsigned long long)x, secs);
    pthread_join(t, NULL);
    printf("joined\n");
    return 0;
}
