/* ppoll with a temporary mask that blocks SIGCHLD, interrupted by a signal the program leaves
 * at its default (SIGWINCH, ignored) sent by a child, in odd rounds followed by one it set to
 * SIG_IGN (SIGALRM), after which the child exits: the kernel restarts
 * ppoll after the ignored signal, and SIGCHLD is delivered when ppoll's mask is lifted. Each
 * round prints whether SIGCHLD is unblocked after ppoll; with "handler", also whether the
 * SIGCHLD handler ran (without, SIGCHLD keeps its default, ignored, disposition). */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile int chld;

static void on_chld(int sig) {
  (void)sig;
  chld++;
}

int main(int argc, char** argv) {
  int handler = argc > 1;
  (void)argv;
  int fds[2];
  pipe(fds);
  if (handler) signal(SIGCHLD, on_chld);
  signal(SIGALRM, SIG_IGN);
  sigset_t during;
  sigemptyset(&during);
  sigaddset(&during, SIGCHLD);
  pid_t parent = getpid();
  for (int i = 0; i < 4; i++) {
    chld = 0;
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
      usleep(20000);
      kill(parent, SIGWINCH);
      if (i % 2) kill(parent, SIGALRM);
      return 0;
    }
    struct pollfd pfd = { .fd = fds[0], .events = POLLIN };
    struct timespec limit = { .tv_sec = 0, .tv_nsec = 150000000 };
    int ret = ppoll(&pfd, 1, &limit, &during);
    sigset_t after;
    sigprocmask(SIG_BLOCK, NULL, &after);
    while (waitpid(child, NULL, 0) < 0) {
    }
    printf("round %d: ppoll %d, SIGCHLD handled %s, blocked after: %s\n", i, ret,
           chld ? "yes" : handler ? "no" : "-", sigismember(&after, SIGCHLD) ? "yes" : "no");
  }
  return 0;
}
