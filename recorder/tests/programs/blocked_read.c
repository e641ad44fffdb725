/* A thread blocks in read() on a pipe while two others pass a token by spinning (so they are
 * preempted while the read is pending); then the main thread writes the pipe. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static volatile int turn;
static int fds[2];
static char buf[4096];

static void *reader(void *arg) {
    (void)arg;
    ssize_t n = read(fds[0], buf, sizeof buf);
    return (void *)n;
}

static void *other(void *arg) {
    (void)arg;
    for (int i = 0; i < 3; i++) {
        while (turn != 1) {
        }
        turn = 0;
    }
    return NULL;
}

int main(void) {
    if (pipe(fds) != 0)
        return 1;
    pthread_t r, o;
    pthread_create(&r, NULL, reader, NULL);
    pthread_create(&o, NULL, other, NULL);
    for (int i = 0; i < 3; i++) {
        turn = 1;
        while (turn != 0) {
        }
    }
    pthread_join(o, NULL);
    if (write(fds[1], "hello", 5) != 5)
        return 1;
    void *n;
    pthread_join(r, &n);
    printf("blocked_read: read %ld bytes: %.5s\n", (long)n, buf);
    return 0;
}
