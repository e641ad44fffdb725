/* Data through a pipe to ourselves: what read() returns must come from the trace. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) { perror("pipe2"); return 1; }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char msg[128];
    int len = snprintf(msg, sizeof msg, "hello through the pipe from pid %d at %ld.%09ld",
                       (int)getpid(), (long)ts.tv_sec, ts.tv_nsec);
    for (int i = 0; i < 3; i++) {
        ssize_t w = write(p[1], msg, len);
        char buf[256] = {0};
        ssize_t r = read(p[0], buf, sizeof buf - 1);
        printf("round %d: wrote %zd read %zd: %s\n", i, w, r, buf);
    }
    /* Partial reads: 100 bytes in, read in chunks of 7. */
    char big[100];
    for (int i = 0; i < 100; i++) big[i] = 'a' + (i + ts.tv_nsec) % 26;
    write(p[1], big, sizeof big);
    size_t total = 0;
    unsigned sum = 0;
    while (total < sizeof big) {
        char c[7];
        ssize_t r = read(p[0], c, sizeof c);
        if (r <= 0) break;
        for (ssize_t i = 0; i < r; i++) sum = sum * 33 + (unsigned char)c[i];
        total += r;
    }
    printf("chunked total %zu sum %u\n", total, sum);
    /* EOF after closing the write end. */
    close(p[1]);
    char c;
    printf("read after close: %zd\n", read(p[0], &c, 1));
    close(p[0]);
    return 0;
}
