/* exit() called by a thread that is not the main thread. The main thread and two more workers are
 * blocked (in pthread_join and in a read on a pipe nobody writes to) when worker 0 calls
 * exit(7): the whole process must end with status 7 (exit_group), the blocked threads with it.
 * stdout is flushed by exit(), so the lines printed before it appear. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int p[2];

static void *blocked_reader(void *arg) {
    printf("worker %ld: blocking in read\n", (long)arg);
    fflush(stdout);
    char c;
    ssize_t n = read(p[0], &c, 1); /* never returns: nobody writes */
    printf("worker %ld: read returned %zd (unexpected)\n", (long)arg, n);
    return NULL;
}

static void *exiter(void *arg) {
    (void)arg;
    struct timespec ts = {0, 30 * 1000 * 1000};
    nanosleep(&ts, NULL);
    printf("worker 0: calling exit(7)\n");
    exit(7);
}

int main(void) {
    if (pipe(p) < 0) {
        perror("pipe");
        return 1;
    }
    printf("main: starting workers\n");
    fflush(stdout);
    pthread_t t[3];
    pthread_create(&t[1], NULL, blocked_reader, (void *)1L);
    pthread_create(&t[2], NULL, blocked_reader, (void *)2L);
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
    pthread_create(&t[0], NULL, exiter, NULL);
    pthread_join(t[0], NULL);
    printf("main: joined the exiting worker (unexpected)\n");
    return 0;
}
