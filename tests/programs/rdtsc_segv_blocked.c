/* Reads the TSC while SIGSEGV is blocked, then relies on its SIGSEGV handler. deja makes rdtsc
 * fault with SIGSEGV to record it, and the kernel resets a blocked SIGSEGV's handler when it
 * raises that fault: deja must put the handler and the mask back, when recording and when
 * replaying. */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <x86intrin.h>

static sigjmp_buf back;

static void on_segv(int sig) {
  (void)sig;
  siglongjmp(back, 1);
}

int main(void) {
  struct sigaction act = {0};
  act.sa_handler = on_segv;
  sigemptyset(&act.sa_mask);
  sigaction(SIGSEGV, &act, NULL);

  sigset_t segv, old, now;
  sigemptyset(&segv);
  sigaddset(&segv, SIGSEGV);
  sigprocmask(SIG_BLOCK, &segv, &old);
  volatile uint64_t tsc = __rdtsc();
  sigprocmask(SIG_SETMASK, NULL, &now);
  printf("SIGSEGV still blocked after rdtsc: %d\n", sigismember(&now, SIGSEGV));
  sigprocmask(SIG_SETMASK, &old, NULL);

  struct sigaction cur;
  sigaction(SIGSEGV, NULL, &cur);
  printf("handler kept: %d\n", cur.sa_handler == on_segv);

  if (sigsetjmp(back, 1) == 0) {
    volatile int *null = (volatile int *)(uintptr_t)(tsc & 0);
    *null = 1;
    puts("no fault?");
    return 1;
  }
  puts("recovered from the fault in the handler");
  return 0;
}
