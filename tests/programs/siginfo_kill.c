/* Sends itself SIGUSR1 with kill(2) and handles it with an SA_SIGINFO handler that keeps the
 * sender's pid; prints the pid, the sender and the signal number. For `p $_siginfo` in gdb. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile int got_signo;
static volatile int got_pid;

static void on_usr1(int sig, siginfo_t *si, void *uctx) {
    (void)uctx;
    got_signo = sig;
    got_pid = si->si_pid;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    kill(getpid(), SIGUSR1);
    printf("pid %d got signal %d from %d\n", (int)getpid(), got_signo, got_pid);
    return 0;
}
