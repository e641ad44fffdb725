#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
/* Measures ptrace hand-offs with a tracer thread per CPU (recorder/README.md, "Processes
 * recorded in parallel"): raw_tracers N PROG ARGS starts N tracer threads, thread i pinned to
 * CPU i%2, each tracing its own copy of PROG (under a seccomp filter that traps every syscall)
 * pinned to the same CPU, and prints the wall time until all have ended. */
static void pin(int cpu){ cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu,&s); sched_setaffinity(0,sizeof s,&s);}
static char **gargv;
static void *tracer(void *arg) {
    int cpu = (int)(long)arg; pin(cpu);
    pid_t pid = fork();
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        struct sock_filter f[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE) };
        struct sock_fprog prog = { 1, f };
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
        execvp(gargv[0], gargv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, __WALL|__WNOTHREAD);
    ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD);
    ptrace(PTRACE_CONT, pid, 0, 0);
    for (;;) {
        pid_t p = waitpid(-1, &st, __WALL|__WNOTHREAD);
        if (p < 0) break;
        if (WIFEXITED(st) || WIFSIGNALED(st)) break;
        int sig = WSTOPSIG(st);
        if (st >> 8 == (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8))) ptrace(PTRACE_CONT, p, 0, 0);
        else ptrace(PTRACE_CONT, p, 0, (sig == SIGTRAP||sig==SIGSTOP) ? 0 : sig);
    }
    return 0;
}
int main(int argc, char **argv) {
    int n = atoi(argv[1]); gargv = argv + 2;
    struct timespec a,b; clock_gettime(CLOCK_MONOTONIC,&a);
    pthread_t t[8];
    for (int i=0;i<n;i++) pthread_create(&t[i],0,tracer,(void*)(long)(i%2));
    for (int i=0;i<n;i++) pthread_join(t[i],0);
    clock_gettime(CLOCK_MONOTONIC,&b);
    printf("%.3f s\n", (b.tv_sec-a.tv_sec)+(b.tv_nsec-a.tv_nsec)/1e9);
}
