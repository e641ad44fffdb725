/* A program installs its own seccomp filter: getppid fails with EPERM (SECCOMP_RET_ERRNO),
 * uname raises SIGSYS (SECCOMP_RET_TRAP, data 7), whose handler checks the siginfo and makes
 * the call return 42 through the ucontext; everything else is allowed. PR_GET_SECCOMP says 0
 * before and 2 after, as outside deja. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <ucontext.h>
#include <unistd.h>

static volatile int traps;
static volatile int trap_ok;

static void on_sigsys(int sig, siginfo_t* si, void* p) {
  ucontext_t* ctx = p;
  trap_ok = sig == SIGSYS && si->si_code == 1 /* SYS_SECCOMP */ &&
            si->si_syscall == SYS_uname && si->si_errno == 7 &&
            si->si_arch == AUDIT_ARCH_X86_64 &&
            ctx->uc_mcontext.gregs[REG_RAX] == SYS_uname;
  ctx->uc_mcontext.gregs[REG_RAX] = 42;
  traps++;
}

int main(void) {
  printf("PR_GET_SECCOMP before: %d\n", prctl(PR_GET_SECCOMP));
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigsys;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSYS, &sa, NULL);
  struct sock_filter filter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_uname, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP | 7),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { sizeof filter / sizeof filter[0], filter };
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
    perror("installing the filter");
    return 1;
  }
  printf("PR_GET_SECCOMP after: %d\n", prctl(PR_GET_SECCOMP));
  for (int i = 0; i < 3; i++) {
    errno = 0;
    long r = syscall(SYS_getppid);
    printf("getppid: %ld (%s)\n", r, strerror(errno));
    struct utsname u;
    r = syscall(SYS_uname, &u);
    printf("uname: %ld, SIGSYS handled %d times, siginfo %s\n", r, traps,
           trap_ok ? "right" : "wrong");
  }
  return 0;
}
