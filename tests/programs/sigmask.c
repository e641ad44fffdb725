/* Signals delivered during syscalls that install a temporary signal mask (sigsuspend, pselect,
 * ppoll, epoll_pwait), and SA_RESTART restarting a blocking read. SIGALRM stays blocked outside
 * those calls; the handler records the mask it ran under; the elapsed times differ per run. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t hits;
static int restart_pipe_w = -1;
static volatile sig_atomic_t usr1_blocked_in_handler;

static void on_alarm(int sig) {
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    usr1_blocked_in_handler = sigismember(&now, SIGUSR1);
    hits++;
    if (restart_pipe_w >= 0) {
        char c = 'R';
        if (write(restart_pipe_w, &c, 1) != 1) hits = -100;
    }
    (void)sig;
}

static void arm(void) {
    struct itimerval it = {{0, 0}, {0, 20000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void report(const char *what, int r, int e, long long t0) {
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    printf("%s: ret %d errno %s hits %d usr1-blocked-in-handler %d alrm-blocked-after %d "
           "elapsed %lld ns\n",
           what, r, r < 0 ? strerror(e) : "-", (int)hits, (int)usr1_blocked_in_handler,
           sigismember(&now, SIGALRM), now_ns() - t0);
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);

    sigset_t blocked, temp;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGALRM);
    sigprocmask(SIG_BLOCK, &blocked, NULL);
    sigemptyset(&temp);
    sigaddset(&temp, SIGUSR1); /* the temporary mask: SIGALRM open, SIGUSR1 blocked */

    long long t0 = now_ns();
    arm();
    int r = sigsuspend(&temp);
    report("sigsuspend", r, errno, t0);

    t0 = now_ns();
    arm();
    r = pselect(0, NULL, NULL, NULL, NULL, &temp);
    report("pselect", r, errno, t0);

    t0 = now_ns();
    arm();
    r = ppoll(NULL, 0, NULL, &temp);
    report("ppoll", r, errno, t0);

    int ep = epoll_create1(0);
    struct epoll_event ev;
    t0 = now_ns();
    arm();
    r = epoll_pwait(ep, &ev, 1, -1, &temp);
    report("epoll_pwait", r, errno, t0);

    /* SA_RESTART: a read interrupted by the handler is restarted transparently, and then reads
     * the byte the handler wrote. */
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    int p[2];
    if (pipe(p) < 0) return 1;
    restart_pipe_w = p[1];
    sigprocmask(SIG_UNBLOCK, &blocked, NULL);
    t0 = now_ns();
    arm();
    char c = 0;
    r = (int)read(p[0], &c, 1);
    report("restarted read", r, errno, t0);
    printf("read byte %c\n", c);
    return 0;
}
