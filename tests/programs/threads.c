/* pthreads whose printed result depends on the interleaving, for the primitive named by argv[1]:
 *
 *   mutex    4 threads append their index to a shared log under a mutex, 3000 times each.
 *   condvar  2 producers push 1500 items each through a 4-slot queue guarded by a mutex and two
 *            condition variables; 2 consumers pop them and log (consumer, producer) pairs.
 *   barrier  4 threads, 300 phases: each logs its index, then waits on a barrier; the thread
 *            that gets PTHREAD_BARRIER_SERIAL_THREAD is noted per phase.
 *   rwlock   2 writers bump a two-field counter under the write lock; 3 readers read it under
 *            the read lock (and check it is never torn); everyone logs who got the lock.
 *
 * Each mode prints invariants that hold in any interleaving (counts, "ok" checks) and then the
 * interleaving itself: a digest of the log, the number of switches between log writers, and the
 * log's first entries. Outside the locks the threads do a random amount of work (seeded from the
 * clock) and now and then call sched_yield(), so native runs differ reliably and a recorder that
 * switches tasks at syscalls sees varied interleavings too. No thread ever spins waiting for
 * another: every wait blocks in the kernel. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOGMAX 20000

static unsigned char log_[LOGMAX];
static int log_len;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

/* Appends under log_mu (for the modes where the caller holds no exclusive lock). */
static void log_locked(int v) {
    pthread_mutex_lock(&log_mu);
    if (log_len < LOGMAX) log_[log_len++] = (unsigned char)v;
    pthread_mutex_unlock(&log_mu);
}

/* A little work outside the locks that the compiler cannot remove. */
static void work(int n) {
    volatile unsigned x = 0;
    for (int i = 0; i < n; i++) x += i;
}

/* Per-thread pseudo-random numbers, seeded from the clock when the thread starts, so the
 * amount of work between lock operations and the points where a thread yields differ from run
 * to run (fixed amounts let the threads fall into the same lock-step pattern run after run). */
static unsigned long long seed_for(int id) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long x = (unsigned long long)ts.tv_nsec * 0x9e3779b97f4a7c15ULL + (unsigned)id + 1;
    return x ? x : 1;
}

static unsigned next_rand(unsigned long long *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return (unsigned)(*x >> 32);
}

/* Work of a random length, and a yield one time in 16. */
static void pause_randomly(unsigned long long *rng) {
    unsigned r = next_rand(rng);
    work(20 + (r & 127));
    if ((r >> 8) % 16 == 0) sched_yield();
}

static void print_log(const char *mode) {
    unsigned long long h = 1469598103934665603ULL;
    int switches = 0;
    for (int i = 0; i < log_len; i++) {
        h = (h ^ log_[i]) * 1099511628211ULL;
        if (i > 0 && log_[i] != log_[i - 1]) switches++;
    }
    printf("%s: log entries %d switches %d digest %016llx\n", mode, log_len, switches, h);
    printf("%s: log prefix", mode);
    for (int i = 0; i < log_len && i < 60; i++) printf(" %d", log_[i]);
    printf("\n");
}

/* ---- mutex ---- */
#define M_THREADS 4
#define M_ITERS 3000
static pthread_mutex_t m_mu = PTHREAD_MUTEX_INITIALIZER;
static int m_counter;

static void *mutex_thread(void *arg) {
    int id = (int)(long)arg;
    unsigned long long rng = seed_for(id);
    for (int i = 0; i < M_ITERS; i++) {
        pthread_mutex_lock(&m_mu);
        m_counter++;
        if (log_len < LOGMAX) log_[log_len++] = (unsigned char)id;
        pthread_mutex_unlock(&m_mu);
        pause_randomly(&rng);
    }
    return NULL;
}

static int run_mutex(void) {
    pthread_t t[M_THREADS];
    for (long i = 0; i < M_THREADS; i++) pthread_create(&t[i], NULL, mutex_thread, (void *)i);
    for (int i = 0; i < M_THREADS; i++) pthread_join(t[i], NULL);
    int per[M_THREADS] = {0};
    for (int i = 0; i < log_len; i++) per[log_[i]]++;
    printf("mutex: counter %d (expected %d)", m_counter, M_THREADS * M_ITERS);
    for (int i = 0; i < M_THREADS; i++) printf(" thread%d=%d", i, per[i]);
    printf("\n");
    print_log("mutex");
    return m_counter == M_THREADS * M_ITERS ? 0 : 1;
}

/* ---- condvar ---- */
#define C_ITEMS 1500
#define C_CAP 4
static pthread_mutex_t c_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c_not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t c_not_full = PTHREAD_COND_INITIALIZER;
static int c_queue[C_CAP];
static int c_head, c_count, c_taken;
static int c_last_seq[2] = {-1, -1};
static int c_order_errors;
static int c_from[2], c_by[2];

static void *producer(void *arg) {
    int id = (int)(long)arg;
    unsigned long long rng = seed_for(id);
    for (int seq = 0; seq < C_ITEMS; seq++) {
        pthread_mutex_lock(&c_mu);
        while (c_count == C_CAP) pthread_cond_wait(&c_not_full, &c_mu);
        c_queue[(c_head + c_count) % C_CAP] = id * 100000 + seq;
        c_count++;
        pthread_cond_signal(&c_not_empty);
        pthread_mutex_unlock(&c_mu);
        pause_randomly(&rng);
    }
    return NULL;
}

static void *consumer(void *arg) {
    int id = (int)(long)arg;
    unsigned long long rng = seed_for(id);
    for (;;) {
        pthread_mutex_lock(&c_mu);
        while (c_count == 0 && c_taken < 2 * C_ITEMS) pthread_cond_wait(&c_not_empty, &c_mu);
        if (c_taken == 2 * C_ITEMS) {
            pthread_mutex_unlock(&c_mu);
            break;
        }
        int item = c_queue[c_head];
        c_head = (c_head + 1) % C_CAP;
        c_count--;
        c_taken++;
        int p = item / 100000, seq = item % 100000;
        if (seq != c_last_seq[p] + 1) c_order_errors++;
        c_last_seq[p] = seq;
        c_from[p]++;
        c_by[id]++;
        if (log_len < LOGMAX) log_[log_len++] = (unsigned char)(id * 2 + p);
        pthread_cond_signal(&c_not_full);
        if (c_taken == 2 * C_ITEMS) pthread_cond_broadcast(&c_not_empty);
        pthread_mutex_unlock(&c_mu);
        pause_randomly(&rng);
    }
    return NULL;
}

static int run_condvar(void) {
    pthread_t t[4];
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, consumer, (void *)i);
    for (long i = 0; i < 2; i++) pthread_create(&t[2 + i], NULL, producer, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("condvar: taken %d from producer0 %d producer1 %d order errors %d\n", c_taken, c_from[0],
           c_from[1], c_order_errors);
    printf("condvar: consumer0 took %d consumer1 took %d\n", c_by[0], c_by[1]);
    print_log("condvar");
    return c_taken == 2 * C_ITEMS && c_order_errors == 0 ? 0 : 1;
}

/* ---- barrier ---- */
#define B_THREADS 4
#define B_PHASES 300
static pthread_barrier_t b_barrier;
static unsigned char b_serial[B_PHASES];

static void *barrier_thread(void *arg) {
    int id = (int)(long)arg;
    unsigned long long rng = seed_for(id);
    for (int phase = 0; phase < B_PHASES; phase++) {
        pause_randomly(&rng);
        log_locked(id);
        if (pthread_barrier_wait(&b_barrier) == PTHREAD_BARRIER_SERIAL_THREAD)
            b_serial[phase] = (unsigned char)id;
    }
    return NULL;
}

static int run_barrier(void) {
    pthread_barrier_init(&b_barrier, NULL, B_THREADS);
    pthread_t t[B_THREADS];
    for (long i = 0; i < B_THREADS; i++) pthread_create(&t[i], NULL, barrier_thread, (void *)i);
    for (int i = 0; i < B_THREADS; i++) pthread_join(t[i], NULL);
    /* Each phase's B_THREADS entries must be a permutation of the thread indexes. */
    int bad = 0;
    for (int phase = 0; phase < B_PHASES; phase++) {
        int seen = 0;
        for (int k = 0; k < B_THREADS; k++) seen |= 1 << log_[phase * B_THREADS + k];
        if (seen != (1 << B_THREADS) - 1) bad++;
    }
    unsigned long long h = 1469598103934665603ULL;
    int serial_count[B_THREADS] = {0};
    for (int phase = 0; phase < B_PHASES; phase++) {
        h = (h ^ b_serial[phase]) * 1099511628211ULL;
        serial_count[b_serial[phase]]++;
    }
    printf("barrier: phases %d bad phases %d\n", B_PHASES, bad);
    printf("barrier: serial thread digest %016llx counts", h);
    for (int i = 0; i < B_THREADS; i++) printf(" %d", serial_count[i]);
    printf("\n");
    print_log("barrier");
    return bad == 0 && log_len == B_THREADS * B_PHASES ? 0 : 1;
}

/* ---- rwlock ---- */
#define R_WRITERS 2
#define R_READERS 3
#define R_ITERS 1000
static pthread_rwlock_t r_lock = PTHREAD_RWLOCK_INITIALIZER;
static volatile long r_a, r_b;
static int r_torn;
static long r_sum[R_READERS];

static void *writer(void *arg) {
    int id = (int)(long)arg;
    unsigned long long rng = seed_for(id);
    for (int i = 0; i < R_ITERS; i++) {
        pthread_rwlock_wrlock(&r_lock);
        r_a++;
        work(10);
        r_b++;
        if (log_len < LOGMAX) log_[log_len++] = (unsigned char)id;
        pthread_rwlock_unlock(&r_lock);
        pause_randomly(&rng);
    }
    return NULL;
}

static void *reader(void *arg) {
    int id = (int)(long)arg;
    unsigned long long rng = seed_for(id);
    for (int i = 0; i < R_ITERS; i++) {
        pthread_rwlock_rdlock(&r_lock);
        long a = r_a;
        work(10);
        long b = r_b;
        if (a != b) __atomic_fetch_add(&r_torn, 1, __ATOMIC_RELAXED);
        r_sum[id] += a;
        log_locked(R_WRITERS + id);
        pthread_rwlock_unlock(&r_lock);
        pause_randomly(&rng);
    }
    return NULL;
}

static int run_rwlock(void) {
    pthread_t t[R_WRITERS + R_READERS];
    for (long i = 0; i < R_READERS; i++) pthread_create(&t[i], NULL, reader, (void *)i);
    for (long i = 0; i < R_WRITERS; i++) pthread_create(&t[R_READERS + i], NULL, writer, (void *)i);
    for (int i = 0; i < R_WRITERS + R_READERS; i++) pthread_join(t[i], NULL);
    printf("rwlock: counter %ld/%ld (expected %d) torn reads %d\n", r_a, r_b, R_WRITERS * R_ITERS,
           r_torn);
    printf("rwlock: reader sums %ld %ld %ld\n", r_sum[0], r_sum[1], r_sum[2]);
    print_log("rwlock");
    return r_a == R_WRITERS * R_ITERS && r_b == r_a && r_torn == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "mutex")) return run_mutex();
    if (!strcmp(mode, "condvar")) return run_condvar();
    if (!strcmp(mode, "barrier")) return run_barrier();
    if (!strcmp(mode, "rwlock")) return run_rwlock();
    fprintf(stderr, "usage: threads mutex|condvar|barrier|rwlock\n");
    return 2;
}
