/* A child writes into a pipe whose read end is closed, leaving SIGPIPE as the program
 * inherited it (the default, from the shell): the kernel's SIGPIPE kills it. The parent
 * reports how the child ended. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
  pid_t child = fork();
  if (child == 0) {
    int fds[2];
    pipe(fds);
    close(fds[0]);
    write(fds[1], "x", 1);
    printf("child survived its write\n");
    return 0;
  }
  int status;
  waitpid(child, &status, 0);
  if (WIFSIGNALED(status))
    printf("child killed by signal %d\n", WTERMSIG(status));
  else
    printf("child exited with %d\n", WEXITSTATUS(status));
  return 0;
}
