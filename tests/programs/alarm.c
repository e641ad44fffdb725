/* alarm() interrupting a blocking read on a pipe nobody writes to. The handler only sets a
 * flag; read fails with EINTR (no SA_RESTART). The elapsed time differs per run. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_alarm;

static void on_alarm(int sig) { got_alarm = sig; }

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = 0; /* no SA_RESTART: the read must fail with EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);

    int p[2];
    if (pipe(p) < 0) { perror("pipe"); return 1; }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned prev = alarm(1);
    char c;
    ssize_t n = read(p[0], &c, 1);
    int e = errno;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    printf("previous alarm %u\n", prev);
    printf("read returned %zd errno %s\n", n, e == EINTR ? "EINTR" : strerror(e));
    printf("handler saw signal %d\n", (int)got_alarm);
    printf("elapsed %lld ns\n", ns);
    return 0;
}
