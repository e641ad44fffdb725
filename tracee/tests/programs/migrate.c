/* Makes traced syscalls in a loop while its tracer moves it between tracer threads, and checks
 * that none of them failed (a syscall made while no tracer held it would fail with ENOSYS under
 * deja's filter) and that a SIGUSR1 sent while it was parked reached its handler once.
 * `allowed_syscall` holds the syscall instruction the filter lets through (the test allows it
 * by address). Exit status 0 when all is well. */
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((naked, used)) long allowed_syscall(long nr) {
    __asm__("mov %rdi, %rax\n\tsyscall\n\tret");
}

static volatile sig_atomic_t usr1;

static void on_usr1(int sig) {
    (void)sig;
    usr1++;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    signal(SIGUSR1, on_usr1);
    pid_t parent = getppid();
    for (int i = 0; i < n; i++) {
        long r = syscall(SYS_getppid);
        if (r != parent) {
            fprintf(stderr, "getppid returned %ld at %d\n", r, i);
            return 2;
        }
    }
    if (usr1 != 1) {
        fprintf(stderr, "SIGUSR1 handled %d times\n", (int)usr1);
        return 3;
    }
    return 0;
}
