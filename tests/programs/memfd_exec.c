/* fexecve of a memfd holding a copy of this very program: the executable the kernel runs
 * has no path. The second run checks it got its argument and that its /proc/self/exe is the
 * memfd, and says so. Also execveat of a descriptor of the directory, by name. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char** environ;

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "from-memfd") == 0) {
    char exe[256] = "";
    readlink("/proc/self/exe", exe, sizeof exe - 1);
    printf("second run: exe is a memfd: %s\n", strncmp(exe, "/memfd:", 7) == 0 ? "yes" : "no");
    return 0;
  }
  int in = open("/proc/self/exe", O_RDONLY);
  int memfd = memfd_create("copy", MFD_CLOEXEC);
  if (in < 0 || memfd < 0) {
    perror("open/memfd_create");
    return 1;
  }
  char buf[8192];
  ssize_t n;
  size_t total = 0;
  while ((n = read(in, buf, sizeof buf)) > 0) {
    if (write(memfd, buf, n) != n) {
      perror("write");
      return 1;
    }
    total += n;
  }
  printf("copied %s bytes into the memfd\n", total > 0 ? "some" : "no");
  fflush(stdout);
  char* args[] = { argv[0], "from-memfd", NULL };
  fexecve(memfd, args, environ);
  perror("fexecve");
  return 1;
}
