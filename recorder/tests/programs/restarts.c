/* Blocking syscalls of every restart kind while another thread spins between syscalls, so that
 * the recorder's preemption SIGSTOP can interrupt them: nanosleep (restart_syscall), read of a
 * pipe (ERESTARTSYS), futex waits in pthread_join; then sigsuspend, which a pending SIGUSR1
 * (lower-numbered than SIGSTOP, so delivered first) or SIGWINCH (delivered after it) interrupts
 * together with the SIGSTOP. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int fds[2];
static volatile unsigned long sink;
static volatile sig_atomic_t handled;

static void *sleeper(void *arg) {
    (void)arg;
    char c;
    long total = 0;
    for (int i = 0; i < 20; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        if (read(fds[0], &c, 1) == 1)
            total += c;
    }
    return (void *)total;
}

static void on_signal(int sig) {
    (void)sig;
    handled++;
}

int main(void) {
    if (pipe(fds) != 0)
        return 1;
    pthread_t t;
    pthread_create(&t, NULL, sleeper, NULL);
    for (int i = 0; i < 20; i++) {
        for (unsigned long j = 0; j < 2000000; j++)
            sink += j;
        char c = 1;
        if (write(fds[1], &c, 1) != 1)
            return 1;
    }
    void *total;
    pthread_join(t, &total);
    signal(SIGUSR1, on_signal);
    signal(SIGWINCH, on_signal);
    sigset_t both, none;
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGWINCH);
    sigemptyset(&none);
    sigprocmask(SIG_BLOCK, &both, NULL);
    for (int i = 0; i < 6; i++) {
        syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), i % 2 ? SIGWINCH : SIGUSR1);
        sigsuspend(&none);
    }
    printf("restarts: %ld bytes read, %d signals handled\n", (long)total, (int)handled);
    return 0;
}
