/* A multi-threaded program to debug in gdb: a global the threads write (for a watchpoint),
 * a thread function with locals, a function whose result `finish` shows, errno set by a
 * failing call, and output whose value depends on the run. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

long counter = 0;
int seed_global = 0;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* Noinline so that gdb can step into it and finish out of it. */
__attribute__((noinline)) int square_plus(int x, int k) {
    int y = x * x;
    return y + k;
}

void *worker(void *arg) {
    int id = (int)(long)arg;
    int local = id * 100 + seed_global;
    for (int i = 0; i < 3; i++) {
        pthread_mutex_lock(&lock);
        counter += local;
        pthread_mutex_unlock(&lock);
    }
    return (void *)(long)local;
}

int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed_global = (int)(ts.tv_nsec % 1000);
    int r = square_plus(seed_global % 7, 3);
    int fd = open("/nonexistent/deja-debugme", O_RDONLY);
    int saved = errno;
    pthread_t t[2];
    for (long i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    printf("seed=%d r=%d fd=%d errno=%d counter=%ld\n", seed_global, r, fd, saved, counter);
    return 3;
}
