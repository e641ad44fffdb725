/* Baseline for scripts/bench: the raw cost of ptrace stops on this machine, with no recording.
 * raw_stop MODE PROG ARGS: runs PROG under a seccomp filter that traps every syscall to this
 * tracer; MODE "seccomp" resumes each seccomp stop with PTRACE_CONT (one stop per syscall),
 * MODE "seccomp+exit" also stops at each syscall exit (two stops, as deja's recorder does).
 * Tracer and tracee are pinned to one CPU, as deja does. */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: raw_stop seccomp|seccomp+exit PROG ARGS\n"); return 2; }
    int both = strcmp(argv[1], "seccomp+exit") == 0;
    cpu_set_t set; CPU_ZERO(&set); CPU_SET(sched_getcpu(), &set);
    sched_setaffinity(0, sizeof set, &set);
    pid_t pid = fork();
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        struct sock_filter f[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE) };
        struct sock_fprog prog = { 1, f };
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD);
    ptrace(PTRACE_CONT, pid, 0, 0);
    for (;;) {
        if (waitpid(pid, &st, __WALL) < 0) return 1;
        if (WIFEXITED(st)) return WEXITSTATUS(st);
        if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
        int sig = WSTOPSIG(st);
        if (st >> 8 == (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8))) {
            ptrace(both ? PTRACE_SYSCALL : PTRACE_CONT, pid, 0, 0);
        } else if (sig == (SIGTRAP | 0x80)) {
            ptrace(PTRACE_CONT, pid, 0, 0);
        } else {
            ptrace(PTRACE_CONT, pid, 0, sig == SIGTRAP ? 0 : sig);
        }
    }
}
