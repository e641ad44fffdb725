/* A timer signal that lands in the middle of a compute loop without any syscall.
 *
 * setitimer(ITIMER_REAL) fires SIGALRM every argv[1] microseconds (default 20000, i.e. 20 ms);
 * the handler notes the loop counter it interrupted and, at the argv[2]-th signal (default 3),
 * tells the loop to stop. Meanwhile main spins on `while (!done) counter++;` on volatile
 * variables: no syscall, no rdtsc, nothing but user code between two signals. Then main stops
 * the timer and prints the counter each signal saw and the final counter.
 *
 * With argv[3] = "virtual" the timer is ITIMER_VIRTUAL (SIGVTALRM after every interval of the
 * process's own user CPU time) instead of ITIMER_REAL (SIGALRM, wall-clock time): then the
 * loop runs the same CPU time whatever a tracer adds around it (scripts/bench uses this to
 * measure the cost of each signal). With argv[3] = "idle" the timer is ITIMER_REAL but the loop
 * is `while (!done) ;`, whose state never changes between two signals (the tests use this to
 * tamper with a point the replay then meets again and again).
 *
 * Everything is deterministic except where the signals land, which is pure timing: native runs
 * print different counters. A recorder that can only deliver signals at syscalls never ends
 * this loop; an exact replay must deliver each SIGALRM at the very iteration it landed on in
 * the recording, so it prints the recorded counters. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define MAX_SIGNALS 1000

static volatile long counter;
static volatile sig_atomic_t done;
static volatile long seen[MAX_SIGNALS];
static volatile int nseen;
static int want = 3;

static void on_alarm(int sig) {
    (void)sig;
    if (nseen < MAX_SIGNALS) seen[nseen] = counter;
    nseen++;
    if (nseen >= want) done = 1;
}

int main(int argc, char **argv) {
    long interval_us = argc > 1 ? strtol(argv[1], NULL, 0) : 20000;
    want = argc > 2 ? atoi(argv[2]) : 3;
    const char *mode = argc > 3 ? argv[3] : "real";
    int virt = strcmp(mode, "virtual") == 0;
    int idle = strcmp(mode, "idle") == 0;
    if (interval_us <= 0 || want <= 0 || want > MAX_SIGNALS ||
        !(virt || idle || strcmp(mode, "real") == 0)) {
        fprintf(stderr,
                "usage: timer_loop [interval_us > 0] [signals 1..%d] [real|virtual|idle]\n",
                MAX_SIGNALS);
        return 2;
    }
    int which = virt ? ITIMER_VIRTUAL : ITIMER_REAL;
    int signo = virt ? SIGVTALRM : SIGALRM;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(signo, &sa, NULL);

    struct itimerval it;
    memset(&it, 0, sizeof it);
    it.it_interval.tv_sec = interval_us / 1000000;
    it.it_interval.tv_usec = interval_us % 1000000;
    it.it_value = it.it_interval;
    if (setitimer(which, &it, NULL) != 0) {
        perror("setitimer");
        return 1;
    }

    if (idle) {
        while (!done) {
        }
    } else {
        while (!done) counter++;
    }

    memset(&it, 0, sizeof it);
    setitimer(which, &it, NULL);

    printf("timer_loop: %d signals every %ld us%s\n", want, interval_us,
           virt ? " of user time" : idle ? " (idle loop)" : "");
    long sum = 0;
    for (int i = 0; i < want; i++) {
        if (i < 10) printf("signal %d saw counter %ld\n", i + 1, seen[i]);
        sum += seen[i];
    }
    printf("sum of counters seen %ld, final counter %ld\n", sum, counter);
    return 0;
}
