/* raise(SIGUSR1) with a handler, plus a blocked-then-unblocked SIGUSR2. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1, usr2;
static volatile long stamp;

static void on_usr1(int sig) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    stamp = ts.tv_nsec;
    usr1++;
    const char m[] = "in SIGUSR1 handler\n";
    write(STDOUT_FILENO, m, sizeof m - 1);
    (void)sig;
}

static void on_usr2(int sig) { usr2 = sig; }

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);

    printf("before raise\n");
    fflush(stdout);
    int r = raise(SIGUSR1);
    printf("raise returned %d, handler ran %d times, stamp %ld\n", r, (int)usr1, (long)stamp);

    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, &old);
    kill(getpid(), SIGUSR2);
    printf("SIGUSR2 pending, handled=%d\n", (int)usr2);
    fflush(stdout);
    sigprocmask(SIG_SETMASK, &old, NULL);
    printf("after unblock handled=%d pid=%d\n", (int)usr2, (int)getpid());
    return 0;
}
