/* A lost-update race: two threads each add 1 to a shared counter N times with a plain
 * read-modify-write (no lock, no atomic). Built with -O1 the increment is a load, an add and
 * a store; a thread that loses the CPU between its load and its store overwrites what the
 * other added meanwhile. Exits 1 (and says how many updates were lost) when any were. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static long counter;
static long n = 20000000;

static void *bump(void *arg) {
    (void)arg;
    for (long i = 0; i < n; i++) {
        long v = counter;
        __asm__ volatile("" : "+r"(v)); /* a load, then the add and the store */
        counter = v + 1;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) n = atol(argv[1]);
    pthread_t a, b;
    pthread_create(&a, NULL, bump, NULL);
    pthread_create(&b, NULL, bump, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    long lost = 2 * n - counter;
    printf("lost_update: %ld of %ld updates lost\n", lost, 2 * n);
    return lost != 0;
}
