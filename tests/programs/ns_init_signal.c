/* The first process of a new pid namespace (its pid 1 there) sends itself SIGQUIT, which it
 * has no handler for: the kernel discards it for a namespace's init, so it goes on and exits
 * with 55. Without the right to make a pid namespace, a plain child does the same with
 * SIGQUIT ignored, so the program prints the same either way. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
  int in_ns = unshare(CLONE_NEWPID) == 0;
  fflush(stdout);
  pid_t child = fork();
  if (child == 0) {
    if (!in_ns) signal(SIGQUIT, SIG_IGN);
    kill(getpid(), SIGQUIT);
    return 55;
  }
  int status;
  waitpid(child, &status, 0);
  printf("child %s with %d\n", WIFEXITED(status) ? "exited" : "was killed",
         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  return 0;
}
