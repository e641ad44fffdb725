/* Several processes, each with two threads, write numbered lines to stdout with one write(2)
 * per line, as fast as they can: the order the lines land in is decided by the scheduler.
 * Usage: interleaved_writes PROCESSES LINES */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int lines;

struct who {
  int proc;
  int thread;
};

static void *writer(void *arg) {
  struct who *w = arg;
  char buf[64];
  for (int i = 0; i < lines; i++) {
    int n = snprintf(buf, sizeof buf, "process %d thread %d line %d\n", w->proc, w->thread, i);
    if (write(1, buf, (size_t)n) != n) {
      return (void *)1;
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  int procs = argc > 1 ? atoi(argv[1]) : 3;
  lines = argc > 2 ? atoi(argv[2]) : 50;
  for (int p = 0; p < procs; p++) {
    if (fork() == 0) {
      struct who a = {p, 0}, b = {p, 1};
      pthread_t t;
      void *ra, *rb;
      pthread_create(&t, NULL, writer, &b);
      ra = writer(&a);
      pthread_join(t, &rb);
      _exit(ra || rb);
    }
  }
  int status, failed = 0;
  while (wait(&status) > 0) {
    failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  }
  printf("all %d writers done%s\n", procs * 2, failed ? " (a write failed)" : "");
  return failed;
}
