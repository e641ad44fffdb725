/* Threads all using the fast path: argv[1] threads (default 4) each make argv[2] rounds
 * (default 3000) of buffered calls (getpid, getppid, clock_gettime, a one-byte read of
 * /dev/zero) with argv[3] steps of computing in between (default 5000). No thread makes a traced
 * syscall in its loop, so only the recorder's time slice switches between them: it preempts
 * them in the middle of it all, some of the time inside the library. Every 16 rounds a thread takes a ticket from a shared atomic counter and mixes it into
 * its digest: the digests depend on how the threads interleaved, which differs between native
 * runs and must be reproduced by an exact replay. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 16

static long rounds = 3000;
static long work_steps = 5000;
static int zfd;
static long tickets;
static unsigned long digests[MAX_THREADS];
static long bad[MAX_THREADS];

static void *work(void *arg) {
    long me = (long)arg;
    unsigned long d = (unsigned long)me;
    for (long i = 0; i < rounds; i++) {
        char c = 1;
        struct timespec ts;
        if (getpid() <= 0 || getppid() <= 0) bad[me]++;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (read(zfd, &c, 1) != 1 || c != 0) bad[me]++;
        volatile unsigned long x = d;
        for (long k = 0; k < work_steps; k++) x = x * 6364136223846793005UL + 1442695040888963407UL;
        d = x ^ (unsigned long)ts.tv_nsec;
        if (i % 16 == 0) d = d * 31 + (unsigned long)__atomic_fetch_add(&tickets, 1, __ATOMIC_SEQ_CST);
    }
    digests[me] = d;
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 4;
    rounds = argc > 2 ? strtol(argv[2], NULL, 0) : 3000;
    work_steps = argc > 3 ? strtol(argv[3], NULL, 0) : 5000;
    if (n < 1 || n > MAX_THREADS) return 2;
    zfd = open("/dev/zero", O_RDONLY);
    if (zfd < 0) {
        perror("/dev/zero");
        return 1;
    }
    pthread_t t[MAX_THREADS];
    for (long i = 0; i < n; i++) pthread_create(&t[i], NULL, work, (void *)i);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < n; i++)
        printf("thread %d: bad %ld digest %lu\n", i, bad[i], digests[i]);
    printf("tickets %ld\n", tickets);
    return 0;
}
