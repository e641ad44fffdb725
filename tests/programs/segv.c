/* SIGSEGV handlers: fault on a bad pointer and on a read-only page, print si_addr and si_code,
 * siglongjmp out, and go on. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static sigjmp_buf env;
static volatile void *fault_addr;
static volatile int fault_code;
static volatile int faults;

static void on_segv(int sig, siginfo_t *si, void *uctx) {
    (void)sig;
    (void)uctx;
    fault_addr = si->si_addr;
    fault_code = si->si_code;
    faults++;
    siglongjmp(env, 1);
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);

    if (sigsetjmp(env, 1) == 0) {
        volatile int *bad = (volatile int *)0x1000;
        printf("about to fault\n");
        fflush(stdout);
        int v = *bad;
        printf("not reached %d\n", v);
    } else {
        printf("caught SIGSEGV at %p code %s\n", (void *)fault_addr,
               fault_code == SEGV_MAPERR ? "SEGV_MAPERR" : "other");
    }

    char *ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sigsetjmp(env, 1) == 0) {
        ((volatile char *)ro)[100] = 1;
        printf("not reached\n");
    } else {
        printf("caught write to read-only page: offset %ld code %s\n",
               (long)((char *)fault_addr - ro), fault_code == SEGV_ACCERR ? "SEGV_ACCERR" : "other");
    }

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    printf("continued after %d faults at %ld.%09ld\n", faults, (long)ts.tv_sec, ts.tv_nsec);
    return 0;
}
