/* PTRACE_SYSEMU inside a recording (compat_ptrace.rs): the tracer stops its child at the
 * entry of getpid, which it skips and answers itself (4242); then at getppid, where
 * PTRACE_SYSCALL shows the skipped call's exit (rax still -ENOSYS), and answers 777. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static int wait_stop(pid_t child, const char *what) {
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFSTOPPED(status)) {
        fprintf(stderr, "%s: unexpected status %#x\n", what, status);
        return -1;
    }
    return WSTOPSIG(status);
}

int main(void) {
    pid_t child = fork();
    if (child < 0)
        return 1;
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, NULL, NULL);
        syscall(SYS_kill, syscall(SYS_getpid), SIGSTOP);
        long a = syscall(SYS_getpid);
        long b = syscall(SYS_getppid);
        _exit(a == 4242 && b == 777 ? 0 : 1);
    }
    struct user_regs_struct regs;
    if (wait_stop(child, "first stop") != SIGSTOP)
        return 1;
    ptrace(PTRACE_SETOPTIONS, child, NULL, (void *)PTRACE_O_TRACESYSGOOD);
    ptrace(PTRACE_SYSEMU, child, NULL, NULL);
    int sig = wait_stop(child, "getpid entry");
    ptrace(PTRACE_GETREGS, child, NULL, &regs);
    printf("entry stop: %s, syscall %s\n", sig == (SIGTRAP | 0x80) ? "yes" : "no",
           regs.orig_rax == SYS_getpid ? "getpid" : "other");
    regs.rax = 4242;
    ptrace(PTRACE_SETREGS, child, NULL, &regs);
    ptrace(PTRACE_SYSEMU, child, NULL, NULL);
    sig = wait_stop(child, "getppid entry");
    ptrace(PTRACE_GETREGS, child, NULL, &regs);
    printf("entry stop: %s, syscall %s\n", sig == (SIGTRAP | 0x80) ? "yes" : "no",
           regs.orig_rax == SYS_getppid ? "getppid" : "other");
    ptrace(PTRACE_SYSCALL, child, NULL, NULL);
    sig = wait_stop(child, "getppid exit");
    ptrace(PTRACE_GETREGS, child, NULL, &regs);
    printf("exit stop: %s, skipped: %s\n", sig == (SIGTRAP | 0x80) ? "yes" : "no",
           (long)regs.rax == -ENOSYS ? "yes" : "no");
    regs.rax = 777;
    ptrace(PTRACE_SETREGS, child, NULL, &regs);
    ptrace(PTRACE_CONT, child, NULL, NULL);
    int status = 0;
    waitpid(child, &status, 0);
    printf("child exited with %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
