/* leave_daemon: forks a child that detaches (setsid) and then lives on, blocked in a read of a
 * pipe nobody writes, with a busy grandchild making syscalls; the initial process exits first.
 * A recorder that waits for every process never ends; rr (and deja) end the recording with the
 * initial process.
 * leave_daemon brief: the daemon instead ends by itself 100 ms after the initial process, after
 * printing a line (for `deja rec -w`, which waits for it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int brief = argc > 1 && strcmp(argv[1], "brief") == 0;
  int never[2], started[2];
  if (pipe(never) < 0 || pipe(started) < 0) {
    perror("pipe");
    return 1;
  }
  pid_t child = fork();
  if (child < 0) {
    perror("fork");
    return 1;
  }
  if (child == 0) {
    setsid();
    if (brief) {
      if (write(started[1], "cg", 2) != 2)
        _exit(3);
      struct timespec ts = {0, 100 * 1000 * 1000};
      nanosleep(&ts, NULL);
      printf("leave_daemon: the daemon ends by itself\n");
      fflush(stdout);
      _exit(0);
    }
    if (fork() == 0) {
      if (write(started[1], "g", 1) != 1)
        _exit(3);
      for (;;)
        getppid();
    }
    if (write(started[1], "c", 1) != 1)
      _exit(3);
    char c;
    read(never[0], &c, 1);
    _exit(0);
  }
  char buf[2];
  if (read(started[0], buf, 1) != 1 || read(started[0], buf + 1, 1) != 1) {
    fprintf(stderr, "leave_daemon: the daemon did not start\n");
    return 1;
  }
  printf("leave_daemon: the initial process exits, its daemon lives on\n");
  return 0;
}
