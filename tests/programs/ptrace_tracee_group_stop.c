/* A tracer makes its seized tracee group-stop (it passes the SIGSTOP on with PTRACE_CONT),
 * which a seized tracee reports as PTRACE_EVENT_STOP with SIGSTOP; then it ends the tracee.
 * deja does not emulate a tracee's group-stop: the recording must stop with a clear error
 * instead of waiting forever (compat_ptrace.rs). */
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
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    return 0;
}
