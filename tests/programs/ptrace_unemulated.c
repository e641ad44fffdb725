/* A tracer asks for a request deja does not emulate (PTRACE_SYSEMU_SINGLESTEP) on its stopped child,
 * reports how it failed, then kills the child with PTRACE_KILL. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
  fflush(stdout);
  pid_t child = fork();
  if (child == 0) {
    ptrace(PTRACE_TRACEME, 0, 0, 0);
    raise(SIGSTOP);
    for (;;)
      pause();
  }
  int status;
  if (waitpid(child, &status, 0) != child || !WIFSTOPPED(status))
    return 1;
  errno = 0;
  long r = ptrace(PTRACE_SYSEMU_SINGLESTEP, child, 0, 0);
  printf("sysemu_singlestep: %ld (%s)\n", r, r ? strerror(errno) : "ok");
  if (r == 0 && (waitpid(child, &status, 0) != child || !WIFSTOPPED(status)))
    return 1;
  printf("kill: %ld\n", ptrace(PTRACE_KILL, child, 0, 0));
  if (waitpid(child, &status, 0) != child)
    return 1;
  printf("child killed by signal %d\n", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return 0;
}
