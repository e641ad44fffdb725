/* A child lowers its stack limit with setrlimit and recurses until the stack overflows
 * (SIGSEGV); the parent prints how deep it got (counted in shared memory). The depth depends
 * on the limit, which the replay must apply for real since it reproduces the fault by running
 * the same code. The old limit prlimit reports is printed too. */
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int *depth;

static int recurse(void) {
  volatile char pad[64];
  pad[0] = (char)++*depth;
  return recurse() + pad[0];
}

int main(void) {
  depth = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_SHARED, -1, 0);
  if (depth == MAP_FAILED)
    return 2;
  struct rlimit old;
  if (prlimit(0, RLIMIT_STACK, NULL, &old) != 0)
    return 3;
  pid_t child = fork();
  if (child == 0) {
    struct rlimit small = {256 * 1024, old.rlim_max};
    if (setrlimit(RLIMIT_STACK, &small) != 0)
      return 4;
    return recurse();
  }
  int status;
  waitpid(child, &status, 0);
  printf("old soft limit %s; child %s by signal %d; depth %s 1000\n",
         old.rlim_cur > 256 * 1024 ? "above" : "not above",
         WIFSIGNALED(status) ? "killed" : "not killed", WIFSIGNALED(status) ? WTERMSIG(status) : 0,
         *depth > 1000 ? "above" : "not above");
  printf("depth=%d\n", *depth);
  return 0;
}
