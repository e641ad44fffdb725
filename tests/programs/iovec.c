/* readv/writev through a pipe with differently split buffers, and writev to stdout. */
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int p[2];
    if (pipe(p) < 0) { perror("pipe"); return 1; }
    char a[32], b[32], c[32];
    int la = snprintf(a, sizeof a, "alpha-%d|", (int)getpid());
    int lb = snprintf(b, sizeof b, "beta-%ld|", ts.tv_nsec);
    int lc = snprintf(c, sizeof c, "gamma-%ld", (long)ts.tv_sec);
    struct iovec wv[3] = {{a, la}, {b, lb}, {c, lc}};
    ssize_t w = writev(p[1], wv, 3);
    char x[5] = {0}, y[11] = {0}, z[64] = {0};
    struct iovec rv[3] = {{x, 4}, {y, 10}, {z, sizeof z - 1}};
    ssize_t r = readv(p[0], rv, 3);
    printf("writev %zd readv %zd\n", w, r);
    printf("x=[%s] y=[%s] z=[%s]\n", x, y, z);
    fflush(stdout);

    /* preadv/pwritev-free: writev straight to stdout (replay must echo it) */
    char l1[64];
    int n1 = snprintf(l1, sizeof l1, "writev to stdout %ld ", ts.tv_nsec);
    struct iovec ov[3] = {{l1, n1}, {"second ", 7}, {"third\n", 6}};
    ssize_t o = writev(STDOUT_FILENO, ov, 3);
    printf("stdout writev returned %zd\n", o);
    struct iovec ev[2] = {{"stderr ", 7}, {"via writev\n", 11}};
    writev(STDERR_FILENO, ev, 2);
    close(p[0]);
    close(p[1]);
    return 0;
}
