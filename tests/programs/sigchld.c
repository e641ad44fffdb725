/* A parent that learns about its children through SIGCHLD. SIGCHLD is blocked; the parent forks
 * 6 children (child i sleeps 0-3 ms at random, then exits with status 10 + i) and waits with
 * sigsuspend() until its handler has reaped them all (waitpid(-1, WNOHANG) in a loop inside the
 * handler).
 *
 * The number of children and the sum of their statuses are fixed; how many times the handler ran
 * (SIGCHLDs that arrive together are merged) and how many times sigsuspend returned vary (a
 * SIGCHLD that arrived while the handler ran is delivered again as the handler returns, before
 * sigsuspend does), as does the order in which the children were reaped. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHILDREN 6

static volatile sig_atomic_t reaped, status_sum, handler_runs;
static pid_t pids[CHILDREN];
static volatile sig_atomic_t order[CHILDREN];

static void on_chld(int sig) {
    (void)sig;
    int saved = errno;
    handler_runs++;
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < CHILDREN; i++)
            if (pids[i] == pid && reaped < CHILDREN) order[reaped] = i;
        if (WIFEXITED(st)) status_sum += WEXITSTATUS(st);
        reaped++;
    }
    errno = saved;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);

    sigset_t block, orig;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &orig);

    fflush(stdout);
    for (int i = 0; i < CHILDREN; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            /* A random delay of 0-3 ms, so the children end in a different order each run. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec = (ts.tv_nsec / 1000 * 7919) % 3000000;
            ts.tv_sec = 0;
            nanosleep(&ts, NULL);
            _exit(10 + i);
        }
        pids[i] = pid;
    }
    int suspends = 0;
    while (reaped < CHILDREN) {
        sigsuspend(&orig); /* returns -1 EINTR after the handler ran */
        suspends++;
    }
    sigprocmask(SIG_SETMASK, &orig, NULL);
    printf("reaped %d children, status sum %d\n", (int)reaped, (int)status_sum);
    printf("handler ran %d times, sigsuspend returned %d times\n", (int)handler_runs, suspends);
    printf("reap order:");
    for (int i = 0; i < CHILDREN; i++) printf(" %d", (int)order[i]);
    printf("\n");
    return 0;
}
