/* A tracer makes its seized tracee group-stop (it passes the SIGSTOP on with PTRACE_CONT),
 * which a seized tracee reports as PTRACE_EVENT_STOP with SIGSTOP; resumed with PTRACE_CONT
 * it runs despite the group-stop, and a PTRACE_INTERRUPT then still names SIGSTOP (its
 * process is stopped until a SIGCONT); then it ends the tracee (compat_ptrace.rs). */
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif

int main(void) {
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        for (;;)
            pause();
    }
    if (ptrace(PTRACE_SEIZE, child, NULL, NULL) != 0) {
        perror("PTRACE_SEIZE");
        return 1;
    }
    int status = 0;
    kill(child, SIGSTOP);
    if (waitpid(child, &status, 0) != child) {
        perror("waitpid");
        return 1;
    }
    printf("signal stop: %s\n", WIFSTOPPED(status) && WSTOPSIG(status) == SIGSTOP ? "SIGSTOP" : "other");
    fflush(stdout);
    if (ptrace(PTRACE_CONT, child, NULL, (void *)SIGSTOP) != 0) {
        perror("PTRACE_CONT");
        return 1;
    }
    if (waitpid(child, &status, 0) != child) {
        perror("waitpid");
        return 1;
    }
    int group_stop = status >> 8 == (SIGSTOP | (PTRACE_EVENT_STOP << 8));
    printf("group-stop reported: %s\n", group_stop ? "yes" : "no");
    if (ptrace(PTRACE_CONT, child, NULL, NULL) != 0 || ptrace(PTRACE_INTERRUPT, child, NULL, NULL) != 0) {
        perror("PTRACE_CONT/PTRACE_INTERRUPT");
        return 1;
    }
    if (waitpid(child, &status, 0) != child) {
        perror("waitpid");
        return 1;
    }
    int still = status >> 8 == (SIGSTOP | (PTRACE_EVENT_STOP << 8));
    printf("interrupted while the group is stopped: %s\n", still ? "SIGSTOP" : "other");
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    return 0;
}
