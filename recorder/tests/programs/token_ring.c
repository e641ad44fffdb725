/* Two threads pass a token back and forth through a volatile variable, spinning without a
 * single syscall while they wait for it: each waits for the other to run. argv[1] rounds. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static volatile int turn;
static int rounds;

static void *other(void *arg) {
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        while (turn != 1) {
        }
        turn = 0;
    }
    return NULL;
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atoi(argv[1]) : 5;
    pthread_t t;
    pthread_create(&t, NULL, other, NULL);
    for (int i = 0; i < rounds; i++) {
        turn = 1;
        while (turn != 0) {
        }
    }
    pthread_join(t, NULL);
    printf("token_ring: %d rounds\n", rounds);
    return 0;
}
