/* A race through mutex-protected data: two threads each move N units into a shared balance
 * with a check-then-act split over two critical sections (lock, read, unlock; compute; lock,
 * write what was read plus one, unlock). Every access holds the mutex, yet an update is lost
 * whenever the other thread writes between a thread's read and its write. Exits 1 (and says
 * how many updates were lost) when any were. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long balance;
static long n = 2000;

static void *deposit(void *arg) {
    (void)arg;
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&lock);
        long seen = balance;
        pthread_mutex_unlock(&lock);
        unsigned long h = (unsigned long)seen;
        for (int k = 0; k < 2000; k++) {
            h = h * 6364136223846793005UL + 1442695040888963407UL;
            __asm__ volatile("" : "+r"(h)); /* some work between the check and the act */
        }
        pthread_mutex_lock(&lock);
        balance = seen + 1;
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) n = atol(argv[1]);
    pthread_t a, b;
    pthread_create(&a, NULL, deposit, NULL);
    pthread_create(&b, NULL, deposit, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    long lost = 2 * n - balance;
    printf("check_then_act: %ld of %ld updates lost\n", lost, 2 * n);
    return lost != 0;
}
