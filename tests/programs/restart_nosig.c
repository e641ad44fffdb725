/* restart_nosig: syscalls the kernel interrupts and restarts without delivering a signal to
 * the interrupted task.
 *
 * 1. A child process with two threads, each blocked in read() of its own pipe, is stopped with
 *    SIGSTOP and continued with SIGCONT by its parent: both reads return -ERESTARTSYS inside
 *    the kernel; one thread takes each signal, the other one just stops and restarts its read.
 * 2. A thread sends its own process SIGUSR1 (with a handler) while the main thread waits in
 *    pthread_join's futex: the kernel wakes the main thread for it, but the sender may take
 *    the signal first (it unblocks nothing, yet its rt_sigprocmask makes it look for signals),
 *    and then the main thread's futex wait restarts with no signal for it.
 * Prints what each part saw; the output does not depend on which thread took which signal.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int pipes[2][2];
static int ready[2];
static char got[2];

static void *reader(void *arg) {
  long i = (long)arg;
  if (write(ready[1], "r", 1) != 1)
    _exit(3);
  if (read(pipes[i][0], &got[i], 1) != 1)
    _exit(4);
  return NULL;
}

static int stopped_child(void) {
  pthread_t t;
  pthread_create(&t, NULL, reader, (void *)1L);
  reader((void *)0L);
  pthread_join(t, NULL);
  return (got[0] == 'a' && got[1] == 'b') ? 0 : 5;
}

static int part_one(void) {
  if (pipe(pipes[0]) < 0 || pipe(pipes[1]) < 0 || pipe(ready) < 0) {
    perror("pipe");
    return 1;
  }
  pid_t child = fork();
  if (child == 0)
    _exit(stopped_child());
  char c;
  for (int i = 0; i < 2; i++)
    if (read(ready[0], &c, 1) != 1)
      return 1;
  /* Let both threads block in their reads. */
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL);
  int status;
  kill(child, SIGSTOP);
  if (waitpid(child, &status, WUNTRACED) != child || !WIFSTOPPED(status)) {
    fprintf(stderr, "restart_nosig: the child did not stop\n");
    return 1;
  }
  printf("part 1: child stopped by signal %d\n", WSTOPSIG(status));
  kill(child, SIGCONT);
  if (waitpid(child, &status, WCONTINUED) != child || !WIFCONTINUED(status)) {
    fprintf(stderr, "restart_nosig: the child did not continue\n");
    return 1;
  }
  printf("part 1: child continued\n");
  if (write(pipes[0][1], "a", 1) != 1 || write(pipes[1][1], "b", 1) != 1)
    return 1;
  if (waitpid(child, &status, 0) != child)
    return 1;
  printf("part 1: child exited with %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  return 0;
}

#define SIGNALS 20
static volatile sig_atomic_t handled;

static void on_usr1(int sig) {
  (void)sig;
  handled++;
}

static void *sender(void *arg) {
  (void)arg;
  sigset_t none;
  sigemptyset(&none);
  for (int i = 1; i <= SIGNALS; i++) {
    kill(getpid(), SIGUSR1);
    while (handled < i) {
      /* Makes this thread look for pending signals of its process. */
      pthread_sigmask(SIG_BLOCK, &none, NULL);
      getppid();
    }
  }
  return NULL;
}

static int part_two(void) {
  struct sigaction sa = {0};
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  pthread_t t;
  pthread_create(&t, NULL, sender, NULL);
  pthread_join(t, NULL);
  printf("part 2: %d signals handled\n", (int)handled);
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (part_one() != 0)
    return 1;
  return part_two();
}
