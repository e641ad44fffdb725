/* Exits with the trap number the kernel put in the frame of an asynchronous signal (SIGUSR1 from
 * raise), right after an int3 whose SIGTRAP a handler took: 3 when nothing intervenes. */
#define _GNU_SOURCE
#include <signal.h>
#include <ucontext.h>

static volatile long seen = -1;

static void on_signal(int sig, siginfo_t *info, void *uc) {
    (void)info;
    if (sig == SIGUSR1) seen = ((ucontext_t *)uc)->uc_mcontext.gregs[REG_TRAPNO];
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, 0);
    sigaction(SIGTRAP, &sa, 0);
    __asm__ volatile("int3");
    raise(SIGUSR1);
    return (int)seen;
}
