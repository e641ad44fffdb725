/* Per-thread signal masks and a process-directed signal. The main thread blocks SIGUSR2 before
 * starting 4 workers, so they inherit the blocked mask. For each round r in 0..ROUNDS, worker
 * chosen[r] unblocks SIGUSR2 with pthread_sigmask; the main thread then sends kill(getpid(),
 * SIGUSR2), which the kernel can only deliver to that worker. The handler notes the index of the
 * thread it ran in (a thread-local index, not a tid); the chosen worker sleeps in nanosleep()
 * until it has seen the handler, blocks SIGUSR2 again, and everyone meets at a barrier. The
 * other workers wait in the barrier meanwhile, and each reports whether SIGUSR2 is blocked in
 * its own mask. The output is the same in every run. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 4
#define ROUNDS 3

static const int chosen[ROUNDS] = {2, 0, 3};
static __thread int my_index = -1; /* -1: main thread */
static volatile sig_atomic_t handled_by = -9, handled_count;
static pthread_barrier_t ready, done;
static int blocked_seen[ROUNDS][WORKERS];

static void on_usr2(int sig) {
    (void)sig;
    handled_by = my_index;
    handled_count++;
}

static int usr2_blocked(void) {
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    return sigismember(&cur, SIGUSR2);
}

static void *worker(void *arg) {
    my_index = (int)(long)arg;
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    for (int r = 0; r < ROUNDS; r++) {
        int me = chosen[r] == my_index;
        if (me) pthread_sigmask(SIG_UNBLOCK, &usr2, NULL);
        blocked_seen[r][my_index] = usr2_blocked();
        pthread_barrier_wait(&ready); /* the main thread sends the signal after this */
        if (me) {
            struct timespec ts = {0, 1000000L};
            while (handled_count <= r) nanosleep(&ts, NULL);
            pthread_sigmask(SIG_BLOCK, &usr2, NULL);
        }
        pthread_barrier_wait(&done);
    }
    return NULL;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, NULL);

    pthread_barrier_init(&ready, NULL, WORKERS + 1);
    pthread_barrier_init(&done, NULL, WORKERS + 1);
    pthread_t t[WORKERS];
    for (long i = 0; i < WORKERS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int r = 0; r < ROUNDS; r++) {
        pthread_barrier_wait(&ready);
        kill(getpid(), SIGUSR2);
        pthread_barrier_wait(&done);
        printf("round %d: SIGUSR2 sent to the process, handled by thread %d (handled %d so far);"
               " blocked in workers:",
               r, (int)handled_by, (int)handled_count);
        for (int w = 0; w < WORKERS; w++) printf(" %d", blocked_seen[r][w]);
        printf("; main blocks it: %d\n", usr2_blocked());
    }
    for (int i = 0; i < WORKERS; i++) pthread_join(t[i], NULL);
    return 0;
}
