/* A tracer attaches to its running child (PTRACE_ATTACH while the child blocks in read),
 * asks for fork and exit events, and follows the grandchild the child forks, which it does
 * not parent: the fork event, the grandchild's first stop, its exit event and its end, then
 * the child's exit event and end. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

static void check(int ok, const char *what) {
  if (!ok) {
    printf("FAILED: %s\n", what);
    exit(1);
  }
}

static pid_t wait_for(pid_t pid, int *status) {
  pid_t got = waitpid(pid, status, __WALL);
  check(got == pid, "waitpid");
  return got;
}

int main(void) {
  int fds[2];
  check(pipe(fds) == 0, "pipe");
  fflush(stdout);
  pid_t child = fork();
  if (child == 0) {
    char ch;
    check(read(fds[0], &ch, 1) == 1, "child read");
    pid_t grandchild = fork();
    if (grandchild == 0)
      _exit(5);
    int status;
    check(waitpid(grandchild, &status, 0) == grandchild, "child waitpid");
    _exit(WEXITSTATUS(status) + 1);
  }
  int status;
  check(ptrace(PTRACE_ATTACH, child, 0, 0) == 0, "attach");
  wait_for(child, &status);
  check(WIFSTOPPED(status) && WSTOPSIG(status) == SIGSTOP, "attach stop");
  check(ptrace(PTRACE_SETOPTIONS, child, 0, PTRACE_O_TRACEFORK | PTRACE_O_TRACEEXIT) == 0,
        "setoptions");
  check(ptrace(PTRACE_CONT, child, 0, 0) == 0, "cont");
  check(write(fds[1], "x", 1) == 1, "write");

  wait_for(child, &status);
  check(status >> 8 == (SIGTRAP | (PTRACE_EVENT_FORK << 8)), "fork event");
  unsigned long msg = 0;
  check(ptrace(PTRACE_GETEVENTMSG, child, 0, &msg) == 0, "geteventmsg");
  pid_t grandchild = (pid_t)msg;
  printf("parent: fork event, the new task is %s\n", grandchild > child ? "newer" : "older");

  wait_for(grandchild, &status);
  check(WIFSTOPPED(status) && WSTOPSIG(status) == SIGSTOP, "grandchild's first stop");
  check(ptrace(PTRACE_CONT, grandchild, 0, 0) == 0, "cont grandchild");
  wait_for(grandchild, &status);
  check(status >> 8 == (SIGTRAP | (PTRACE_EVENT_EXIT << 8)), "grandchild exit event");
  check(ptrace(PTRACE_GETEVENTMSG, grandchild, 0, &msg) == 0, "geteventmsg");
  printf("parent: grandchild exit event, status %lu\n", msg >> 8);
  check(ptrace(PTRACE_CONT, grandchild, 0, 0) == 0, "cont grandchild");
  wait_for(grandchild, &status);
  check(WIFEXITED(status), "grandchild ended");
  printf("parent: grandchild exited with %d\n", WEXITSTATUS(status));

  check(ptrace(PTRACE_CONT, child, 0, 0) == 0, "cont child");
  wait_for(child, &status);
  /* The grandchild's end sends the child a SIGCHLD, which stops it for its tracer first. */
  while (WIFSTOPPED(status) && WSTOPSIG(status) != SIGTRAP) {
    printf("parent: child stopped by signal %d\n", WSTOPSIG(status));
    check(ptrace(PTRACE_CONT, child, 0, WSTOPSIG(status)) == 0, "cont child with its signal");
    wait_for(child, &status);
  }
  check(status >> 8 == (SIGTRAP | (PTRACE_EVENT_EXIT << 8)), "child exit event");
  check(ptrace(PTRACE_DETACH, child, 0, 0) == 0, "detach");
  wait_for(child, &status);
  check(WIFEXITED(status), "child ended");
  printf("parent: child exited with %d\n", WEXITSTATUS(status));
  return 0;
}
