/* Signals landing while a thread is inside the fast path's library.
 *
 * A timer (argv[1] = "real": ITIMER_REAL/SIGALRM, "prof": ITIMER_PROF/SIGPROF) fires every
 * argv[2] microseconds (default 500) while main loops over buffered calls: getpid,
 * clock_gettime and a one-byte read of /dev/zero. Most of main's time is spent in those calls,
 * so many signals land while it is inside the library or a stub. The handler counts the signal,
 * notes the loop iteration it interrupted and makes a buffered call itself (getpid, and a
 * clock_gettime), which re-enters the library's hook while the interrupted call may still hold
 * it. After argv[3] signals (default 300) main stops the timer and prints the count, the
 * iteration counts and digests: where the signals landed is pure timing, so they differ between
 * native runs and an exact replay must deliver each signal at the recorded place. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t hits;
static volatile long iter;
static volatile unsigned long seen_digest;
static volatile long handler_pid_ok;

static void on_signal(int sig) {
    (void)sig;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (getpid() > 0) handler_pid_ok++;
    seen_digest = seen_digest * 1000003 + (unsigned long)iter * 31 + (unsigned long)ts.tv_nsec;
    hits++;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "real";
    long interval = argc > 2 ? strtol(argv[2], NULL, 0) : 500;
    int want = argc > 3 ? atoi(argv[3]) : 300;
    int prof = strcmp(mode, "prof") == 0;
    if (!prof && strcmp(mode, "real") != 0) {
        fprintf(stderr, "usage: fp_signals [real|prof] [interval_us] [signals]\n");
        return 2;
    }
    int sig = prof ? SIGPROF : SIGALRM;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    int z = open("/dev/zero", O_RDONLY);
    if (z < 0) {
        perror("/dev/zero");
        return 1;
    }
    struct itimerval it = {{0, interval}, {0, interval}};
    setitimer(prof ? ITIMER_PROF : ITIMER_REAL, &it, NULL);
    unsigned long digest = 0;
    long bad = 0;
    while (hits < want) {
        struct timespec ts;
        char c = 1;
        pid_t pid = getpid();
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (read(z, &c, 1) != 1 || c != 0 || pid <= 0) bad++;
        digest = digest * 31 + (unsigned long)ts.tv_nsec;
        iter++;
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(prof ? ITIMER_PROF : ITIMER_REAL, &off, NULL);
    printf("fp_signals %s: %d signals, handler getpid ok %ld, %ld iterations, %ld bad, "
           "digests %lu %lu\n",
           mode, (int)hits, handler_pid_ok, iter, bad, digest, seen_digest);
    return 0;
}
