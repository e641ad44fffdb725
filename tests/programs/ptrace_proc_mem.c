/* A parent changes its child's memory through /proc/PID/mem (pwrite, and lseek + write), as a
 * debugger plants breakpoints; the child prints what it then finds. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile long first = 1, second = 2;

int main(void) {
  int fds[2];
  if (pipe(fds))
    return 1;
  fflush(stdout);
  pid_t child = fork();
  if (child == 0) {
    char ch;
    if (read(fds[0], &ch, 1) != 1)
      _exit(1);
    printf("child: first=%ld second=%ld\n", first, second);
    fflush(stdout);
    _exit(0);
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/mem", child);
  int mem = open(path, O_RDWR);
  if (mem < 0)
    return 1;
  long a = 111, b = 222;
  if (pwrite(mem, &a, sizeof a, (off_t)(unsigned long)&first) != sizeof a)
    return 1;
  if (lseek(mem, (off_t)(unsigned long)&second, SEEK_SET) < 0 || write(mem, &b, sizeof b) != sizeof b)
    return 1;
  if (write(fds[1], "x", 1) != 1)
    return 1;
  int status;
  waitpid(child, &status, 0);
  printf("parent: child exited with %d\n", WEXITSTATUS(status));
  return 0;
}
