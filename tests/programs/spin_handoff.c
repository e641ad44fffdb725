/* Threads handing a token round through an atomic variable with pure spin-waits.
 *
 * argv[1] threads (default 3) pass a token `turn` round a ring for argv[2] rounds (default 30):
 * thread i spins on `while (atomic load of turn != i) ;` (no syscall, no sched_yield, no pause),
 * then appends its index to a log, folds it into a checksum and stores (i + 1) % N into turn.
 * The main thread only creates and joins them. The output (the hand-off count, whether the log
 * is the expected round-robin order, and the checksum) is the same in every run; only how long
 * each wait spins is timing.
 *
 * A recorder that runs one task at a time and switches tasks only at syscalls can never finish
 * this: the thread holding the CPU spins waiting for a thread that cannot run. It ends only if
 * the recorder preempts spinning threads, and its replay must stop each preempted thread at the
 * same point (here, mostly some iteration of a wait loop whose state never changes). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_THREADS 16
#define MAX_ROUNDS 10000

static int nthreads = 3;
static int rounds = 30;
static int turn; /* accessed with __atomic builtins only */
static int log_[MAX_THREADS * MAX_ROUNDS];
static int log_len;
static unsigned long checksum = 1469598103934665603UL;

static void *runner(void *arg) {
    int me = (int)(long)arg;
    for (int r = 0; r < rounds; r++) {
        while (__atomic_load_n(&turn, __ATOMIC_ACQUIRE) != me) {
        }
        log_[log_len++] = me;
        checksum = (checksum ^ (unsigned long)(me * 1000 + r)) * 1099511628211UL;
        __atomic_store_n(&turn, (me + 1) % nthreads, __ATOMIC_RELEASE);
    }
    return NULL;
}

int main(int argc, char **argv) {
    nthreads = argc > 1 ? atoi(argv[1]) : 3;
    rounds = argc > 2 ? atoi(argv[2]) : 30;
    if (nthreads < 2 || nthreads > MAX_THREADS || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: spin_handoff [threads 2..%d] [rounds 1..%d]\n", MAX_THREADS,
                MAX_ROUNDS);
        return 2;
    }
    pthread_t t[MAX_THREADS];
    for (long i = 0; i < nthreads; i++) {
        if (pthread_create(&t[i], NULL, runner, (void *)i) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    for (int i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
    int in_order = log_len == nthreads * rounds;
    for (int k = 0; in_order && k < log_len; k++) in_order = log_[k] == k % nthreads;
    printf("spin_handoff: %d threads, %d rounds, %d hand-offs, order %s, checksum %016lx\n",
           nthreads, rounds, log_len, in_order ? "ok" : "WRONG", checksum);
    return in_order ? 0 : 1;
}
