/* A tracer single-steps its stopped child through a small computation and reads its
 * registers after each step; then lets it run to its end. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static void check(int ok, const char *what) {
  if (!ok) {
    printf("FAILED: %s\n", what);
    exit(1);
  }
}

static volatile long total;

static void work(void) {
  for (long i = 1; i <= 10; i++)
    total += i * i;
}

int main(void) {
  fflush(stdout);
  pid_t child = fork();
  if (child == 0) {
    ptrace(PTRACE_TRACEME, 0, 0, 0);
    raise(SIGSTOP);
    work();
    printf("child: total=%ld\n", total);
    return 0;
  }
  int status;
  check(waitpid(child, &status, 0) == child && WIFSTOPPED(status), "the child stopped");
  unsigned long long last = 0;
  int moved = 0, traps = 0;
  for (int i = 0; i < 200; i++) {
    check(ptrace(PTRACE_SINGLESTEP, child, 0, 0) == 0, "singlestep");
    check(waitpid(child, &status, 0) == child, "waitpid");
    check(WIFSTOPPED(status), "stopped after a step");
    if (WSTOPSIG(status) == SIGTRAP)
      traps++;
    struct user_regs_struct regs;
    check(ptrace(PTRACE_GETREGS, child, 0, &regs) == 0, "getregs");
    if (regs.rip != last)
      moved++;
    last = regs.rip;
  }
  printf("parent: 200 steps, %d traps, rip moved %d times\n", traps, moved);
  check(ptrace(PTRACE_CONT, child, 0, 0) == 0, "cont");
  check(waitpid(child, &status, 0) == child && WIFEXITED(status), "the child exited");
  printf("parent: child exited with %d\n", WEXITSTATUS(status));
  return 0;
}
