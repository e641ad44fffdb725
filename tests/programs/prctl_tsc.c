/* The program's own PR_SET_TSC setting, as natively: PR_GET_TSC reports it, and in
 * PR_TSC_SIGSEGV mode rdtsc raises SIGSEGV. PR_GET_SECCOMP reports no filter. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <x86intrin.h>

static sigjmp_buf back;

static void on_segv(int sig) {
  (void)sig;
  siglongjmp(back, 1);
}

static const char *try_rdtsc(void) {
  if (sigsetjmp(back, 1)) {
    return "faulted";
  }
  volatile unsigned long long t = __rdtsc();
  (void)t;
  return "ran";
}

static void show(const char *when) {
  int mode = -1;
  int r = prctl(PR_GET_TSC, &mode, 0, 0, 0);
  printf("%s: PR_GET_TSC %d mode %d, rdtsc %s\n", when, r, mode, try_rdtsc());
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_segv;
  sigaction(SIGSEGV, &sa, NULL);
  printf("PR_GET_SECCOMP %d\n", prctl(PR_GET_SECCOMP, 0, 0, 0, 0));
  show("start");
  printf("PR_SET_TSC(SIGSEGV) %d\n", prctl(PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0));
  show("trapping");
  printf("PR_SET_TSC(ENABLE) %d\n", prctl(PR_SET_TSC, PR_TSC_ENABLE, 0, 0, 0));
  show("enabled");
  printf("PR_SET_TSC(7) %d\n", prctl(PR_SET_TSC, 7, 0, 0, 0));
  return 0;
}
