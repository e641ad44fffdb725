/* A tracer: the child asks to be traced (PTRACE_TRACEME) and stops itself; the parent reads
 * and changes a variable of the child (PEEKDATA/POKEDATA), then follows every syscall of the
 * child with PTRACE_SYSCALL, reading its registers at each stop, and changes the result of
 * one of them (SETREGS at the exit of getppid). The child prints what it saw. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile long secret = 1;

static void check(int ok, const char *what) {
  if (!ok) {
    printf("FAILED: %s\n", what);
    exit(1);
  }
}

int main(void) {
  fflush(stdout);
  pid_t child = fork();
  if (child == 0) {
    check(ptrace(PTRACE_TRACEME, 0, 0, 0) == 0, "traceme");
    raise(SIGSTOP);
    long ppid = syscall(SYS_getppid);
    char buf[80];
    int n = snprintf(buf, sizeof buf, "child: secret=%ld getppid=%ld\n", secret, ppid);
    write(1, buf, n);
    _exit(3);
  }
  int status;
  check(waitpid(child, &status, 0) == child, "waitpid for the stop");
  check(WIFSTOPPED(status) && WSTOPSIG(status) == SIGSTOP, "stopped by SIGSTOP");
  check(ptrace(PTRACE_SETOPTIONS, child, 0, PTRACE_O_TRACESYSGOOD) == 0, "setoptions");
  errno = 0;
  long before = ptrace(PTRACE_PEEKDATA, child, &secret, 0);
  check(errno == 0, "peekdata");
  check(ptrace(PTRACE_POKEDATA, child, &secret, (void *)42) == 0, "pokedata");
  printf("parent: secret was %ld, poked 42\n", before);

  int entering = 1, stops = 0;
  for (;;) {
    check(ptrace(PTRACE_SYSCALL, child, 0, 0) == 0, "PTRACE_SYSCALL");
    check(waitpid(child, &status, 0) == child, "waitpid");
    if (WIFEXITED(status)) {
      printf("parent: child exited with %d after %d syscall stops\n", WEXITSTATUS(status), stops);
      break;
    }
    check(WIFSTOPPED(status) && WSTOPSIG(status) == (SIGTRAP | 0x80), "a syscall stop");
    stops++;
    struct user_regs_struct regs;
    check(ptrace(PTRACE_GETREGS, child, 0, &regs) == 0, "getregs");
    if (entering) {
      printf("parent: enter syscall %lld\n", regs.orig_rax);
    } else {
      printf("parent: leave syscall %lld\n", regs.orig_rax);
      if (regs.orig_rax == SYS_getppid) {
        regs.rax = 4242;
        check(ptrace(PTRACE_SETREGS, child, 0, &regs) == 0, "setregs");
      }
    }
    entering = !entering;
  }
  return 0;
}
