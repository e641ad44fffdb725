/* execve from a thread that is not the main thread, while the main thread sleeps and a third
 * thread blocks in read: the kernel kills the other threads and the exec'ing thread takes
 * the process id. The new program checks that its pid is its tid and that the signal mask
 * survived the exec, SIGSEGV included (deja's rdtsc trap in the dynamic loader must not
 * unblock it). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fds[2];
static char self[64];

static void* blocked_reader(void* arg) {
  char c;
  (void)arg;
  read(fds[0], &c, 1);
  return NULL;
}

static void* exec_thread(void* arg) {
  char* argv[] = { self, "after", NULL };
  (void)arg;
  printf("thread %s exec\n", syscall(SYS_gettid) == getpid() ? "is main," : "is not main,");
  fflush(stdout);
  execv("/proc/self/exe", argv);
  perror("execv");
  return NULL;
}

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "after") == 0) {
    sigset_t set;
    sigprocmask(SIG_SETMASK, NULL, &set);
    printf("after exec: pid %s tid, SIGUSR2 %s, SIGSEGV %s\n",
           syscall(SYS_gettid) == getpid() ? "==" : "!=",
           sigismember(&set, SIGUSR2) ? "blocked" : "not blocked",
           sigismember(&set, SIGSEGV) ? "blocked" : "not blocked");
    return 0;
  }
  snprintf(self, sizeof self, "%s", argv[0]);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, SIGSEGV);
  sigprocmask(SIG_BLOCK, &set, NULL);
  pipe(fds);
  pthread_t reader, execer;
  pthread_create(&reader, NULL, blocked_reader, NULL);
  pthread_create(&execer, NULL, exec_thread, NULL);
  sleep(100);
  printf("not reached\n");
  return 1;
}
