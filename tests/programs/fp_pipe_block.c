/* A read that would block, at a syscall site the fast path has patched, while another thread
 * must run to unblock it.
 *
 * main makes a few hundred buffered calls (one-byte reads of /dev/zero, getpid), creates a
 * pipe and two threads. Thread A first reads /dev/zero one byte at a time (so that the read site
 * threads use is patched and its reads are buffered), then, for ROUNDS rounds, read()s the pipe
 * while it is empty: the library's RWF_NOWAIT probe fails and the call must go the traced path
 * and block there without holding up the serialized schedule. Thread B sleeps a little,
 * computes (no syscall), then writes the round's data into the pipe. A prints what it read. A
 * recorder that let A block inside the library while holding the CPU would never let B run:
 * the recording would hang. Prints the descriptors first ("zero fd Z pipe fd P"). */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 5

static int z;
static int p[2];

static void *reader(void *arg) {
    (void)arg;
    long ok = 0;
    for (int i = 0; i < 200; i++) {
        char c = 1;
        if (read(z, &c, 1) == 1 && c == 0) ok++;
    }
    printf("A read %ld zero bytes\n", ok);
    for (int r = 0; r < ROUNDS; r++) {
        char buf[64];
        ssize_t n = read(p[0], buf, sizeof buf - 1);
        if (n <= 0) {
            perror("read pipe");
            exit(1);
        }
        buf[n] = 0;
        printf("A round %d read %zd bytes: %s\n", r, n, buf);
    }
    return NULL;
}

static void *writer(void *arg) {
    (void)arg;
    for (int r = 0; r < ROUNDS; r++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        volatile unsigned long x = r + 1;
        for (long i = 0; i < 2000000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
        char msg[64];
        int len = snprintf(msg, sizeof msg, "round %d work %lu", r, (unsigned long)(x % 100000));
        if (write(p[1], msg, len) != len) {
            perror("write pipe");
            exit(1);
        }
    }
    return NULL;
}

int main(void) {
    z = open("/dev/zero", O_RDONLY);
    if (z < 0) {
        perror("/dev/zero");
        return 1;
    }
    long ok = 0;
    for (int i = 0; i < 300; i++) {
        char c = 1;
        if (read(z, &c, 1) == 1 && c == 0) ok++;
        ok += getpid() > 0;
    }
    if (pipe(p) < 0) {
        perror("pipe");
        return 1;
    }
    printf("zero fd %d pipe fd %d\n", z, p[0]);
    printf("main: %ld buffered calls ok\n", ok);
    fflush(stdout);
    pthread_t a, b;
    pthread_create(&a, NULL, reader, NULL);
    pthread_create(&b, NULL, writer, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("done at %ld.%09ld\n", (long)ts.tv_sec, ts.tv_nsec);
    return 0;
}
