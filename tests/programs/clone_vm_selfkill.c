/* A child made by clone(CLONE_VM) shares the parent's memory, writes a word there after its
 * last syscall and then kills itself with SIGKILL. The parent then prints as many letters as
 * the word says: the replay must run the child up to its kill, not stop it earlier. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int word = 2;

static int child(void* arg) {
  long me = syscall(SYS_gettid);
  (void)arg;
  word = 7;
  syscall(SYS_kill, me, SIGKILL);
  return 1;
}

int main(void) {
  size_t size = 1 << 16;
  char* stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  pid_t pid = clone(child, stack + size, CLONE_VM | SIGCHLD, NULL);
  int status;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) {
    perror("clone/waitpid");
    return 1;
  }
  printf("child killed by %d; word %d: %.*s\n", WTERMSIG(status), word, word, "abcdefghij");
  return 0;
}
