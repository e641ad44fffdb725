/* A thread sends the main thread SIGUSR2 with pthread_kill; the main thread waits for its
 * handler to run, then for the thread. For `p $_siginfo` per thread in gdb. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static pthread_t main_thread;
static volatile int got;

static void on_usr2(int sig) { got = sig; }

static void *worker(void *arg) {
    (void)arg;
    pthread_kill(main_thread, SIGUSR2);
    usleep(200000);
    return NULL;
}

int main(void) {
    signal(SIGUSR2, on_usr2);
    main_thread = pthread_self();
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    while (!got) usleep(1000);
    pthread_join(t, NULL);
    printf("got %d\n", got);
    return 0;
}
