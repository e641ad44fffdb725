/* robust_owner_dies: robust mutexes whose owner dies holding them. A thread locks a
 * process-private robust mutex and exits; a forked child locks a process-shared one (in a
 * MAP_SHARED page) and is killed with SIGKILL. Each time the next locker gets EOWNERDEAD, from
 * the kernel's walk of the dead owner's robust list.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_mutex_t *private_mutex;

static void *lock_and_exit(void *arg) {
  (void)arg;
  pthread_mutex_lock(private_mutex);
  return NULL;
}

static pthread_mutex_t *robust_mutex(int shared) {
  pthread_mutex_t *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                            (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    return NULL;
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  if (shared)
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutex_init(m, &attr);
  return m;
}

static void relock(pthread_mutex_t *m, const char *what) {
  int r = pthread_mutex_lock(m);
  printf("%s: lock after the owner died: %s\n", what, r == EOWNERDEAD ? "EOWNERDEAD" : "other");
  if (r == EOWNERDEAD)
    pthread_mutex_consistent(m);
  pthread_mutex_unlock(m);
}

int main(void) {
  private_mutex = robust_mutex(0);
  pthread_mutex_t *shared = robust_mutex(1);
  if (!private_mutex || !shared) {
    perror("mmap");
    return 1;
  }
  pthread_t t;
  pthread_create(&t, NULL, lock_and_exit, NULL);
  pthread_join(t, NULL);
  relock(private_mutex, "thread");

  int locked[2];
  if (pipe(locked) < 0)
    return 1;
  pid_t child = fork();
  if (child == 0) {
    pthread_mutex_lock(shared);
    if (write(locked[1], "l", 1) != 1)
      _exit(2);
    for (;;)
      pause();
  }
  char c;
  if (read(locked[0], &c, 1) != 1)
    return 1;
  kill(child, SIGKILL);
  int status;
  waitpid(child, &status, 0);
  printf("child: killed by signal %d\n", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  relock(shared, "child");
  return 0;
}
