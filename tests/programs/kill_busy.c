/* kill_busy [N]: forks N children that make syscalls in a loop (getppid, write to a pipe the
 * parent never reads fully), then kills each with SIGKILL while it is busy and reaps it. Prints
 * how each child ended. Under a recorder, the children die while stopped at or inside syscalls.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 5;
  if (n < 1 || n > 64) {
    fprintf(stderr, "kill_busy: N must be 1..64\n");
    return 2;
  }
  pid_t kids[64];
  int ready[2];
  if (pipe(ready) < 0) {
    perror("pipe");
    return 1;
  }
  for (int i = 0; i < n; i++) {
    kids[i] = fork();
    if (kids[i] < 0) {
      perror("fork");
      return 1;
    }
    if (kids[i] == 0) {
      close(ready[0]);
      char c = 'r';
      if (write(ready[1], &c, 1) != 1)
        _exit(3);
      for (;;) {
        getppid();
        getpid();
      }
    }
  }
  close(ready[1]);
  /* Every child is running its loop before it is killed. */
  for (int i = 0; i < n; i++) {
    char c;
    if (read(ready[0], &c, 1) != 1) {
      fprintf(stderr, "kill_busy: a child did not start\n");
      return 1;
    }
  }
  int killed = 0;
  for (int i = 0; i < n; i++) {
    if (kill(kids[i], SIGKILL) < 0) {
      perror("kill");
      return 1;
    }
    int status;
    if (waitpid(kids[i], &status, 0) != kids[i]) {
      perror("waitpid");
      return 1;
    }
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      killed++;
  }
  printf("kill_busy: %d of %d children killed by SIGKILL\n", killed, n);
  return killed == n ? 0 : 1;
}
