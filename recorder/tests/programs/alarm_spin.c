/* A timer signal ends a loop that makes no syscalls: the handler sets the flag the loop waits
 * for, so the signal must be delivered in the middle of the loop. */
#include <signal.h>
#include <stdio.h>
#include <sys/time.h>

static volatile sig_atomic_t fired;

static void on_alarm(int sig) {
    (void)sig;
    fired = 1;
}

int main(void) {
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 0}, {0, 30000}};
    setitimer(ITIMER_REAL, &it, NULL);
    unsigned long n = 0;
    while (!fired)
        n++;
    printf("alarm_spin: the loop ran %s\n", n > 0 ? "until the signal" : "not at all");
    return 0;
}
