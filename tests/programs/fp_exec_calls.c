/* Calls the fast path runs in both modes (replay executes them: rt_sigaction, rt_sigprocmask,
 * mprotect, munmap, brk) and emulated calls it takes only for some arguments (fcntl's
 * descriptor flags, ioctl TCGETS/TIOCGWINSZ, prlimit64 as a query), in a loop.
 *
 * argv[1]: "loop" (default) or "bigbrk". argv[2]: iterations (default 300).
 *
 * loop: each iteration installs one of two SIGUSR1 handlers (and sets SIGUSR2 to SIG_IGN and
 * queries SIGTERM's action), raises SIGUSR1 every 10th iteration (the handler that runs, one
 * installed by a buffered rt_sigaction, says which it is in the output), queries the signal
 * mask and blocks and unblocks SIGUSR1 (every 10th iteration raising SIGUSR1 while it is
 * blocked: the unblock, which makes it deliverable, takes the traced path), flips a page between read-only and read-write and
 * writes it, grows and shrinks the heap with sbrk, maps and unmaps a page, reads and sets
 * FD_CLOEXEC and the status flags of a pipe, asks isatty and the window size, and reads the
 * descriptor limit; every 10th iteration it also queries SIGSEGV's action, blocks and
 * unblocks SIGSEGV and sets the mask back with SIG_SETMASK (calls the fast path leaves
 * traced). It prints a digest of every result and the handler's counts.
 *
 * bigbrk: grows the heap by 1 GiB with sbrk (nothing touched, so it succeeds under
 * overcommit), prints whether it did, and shrinks it back: replayed under a smaller
 * RLIMIT_DATA, the replay's own brk fails where the recording's succeeded. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <termios.h>
#include <unistd.h>

static volatile sig_atomic_t ran_a, ran_b;
static void on_a(int sig) { (void)sig; ran_a++; }
static void on_b(int sig) { (void)sig; ran_b++; }

static unsigned long digest = 1469598103934665603ul;
static void mix(long v) { digest = (digest ^ (unsigned long)v) * 1099511628211ul; }

static int bigbrk(void) {
    void *old = sbrk(0);
    void *r = sbrk(1l << 30);
    int ok = r != (void *)-1;
    printf("fp_exec_calls: bigbrk %s\n", ok ? "grew" : "failed");
    if (ok) sbrk(-(1l << 30));
    printf("fp_exec_calls: heap back %d\n", sbrk(0) == old);
    return 0;
}

int main(int argc, char **argv) {
    /* stdio's buffer outside the heap, which sbrk moves under malloc's feet. */
    static char outbuf[4096];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    const char *mode = argc > 1 ? argv[1] : "loop";
    int n = argc > 2 ? atoi(argv[2]) : 300;
    if (strcmp(mode, "bigbrk") == 0) return bigbrk();
    if (strcmp(mode, "loop") != 0) {
        fprintf(stderr, "usage: fp_exec_calls [loop|bigbrk] [iterations]\n");
        return 2;
    }
    long pagesz = sysconf(_SC_PAGESIZE);
    char *page = mmap(NULL, pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return 1;
    int fds[2];
    if (pipe(fds) != 0) return 1;
    long raised = 0;
    for (int i = 0; i < n; i++) {
        struct sigaction sa, old;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = (i / 10) % 2 ? on_b : on_a;
        sigemptyset(&sa.sa_mask);
        mix(sigaction(SIGUSR1, &sa, &old));
        mix(old.sa_handler == on_a ? 1 : old.sa_handler == on_b ? 2 : 3);
        sa.sa_handler = SIG_IGN;
        mix(sigaction(SIGUSR2, &sa, NULL));
        mix(sigaction(SIGTERM, NULL, &old));
        mix(old.sa_handler == SIG_DFL);
        if (i % 10 == 9) {
            raise(SIGUSR1);
            raised++;
        }

        sigset_t set, cur;
        mix(sigprocmask(SIG_BLOCK, NULL, &cur));
        mix(sigismember(&cur, SIGUSR1));
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        mix(sigprocmask(SIG_BLOCK, &set, NULL));
        if (i % 10 == 4) {
            /* Pending while blocked: delivered as the (traced) unblock returns. */
            raise(SIGUSR1);
            raised++;
        }
        mix(sigprocmask(SIG_UNBLOCK, &set, &cur));
        mix(sigismember(&cur, SIGUSR1));
        if (i % 10 == 0) {
            /* Traced: SIGSEGV's action and mask, which deja follows, and SIG_SETMASK. */
            mix(sigaction(SIGSEGV, NULL, &old));
            sigaddset(&set, SIGSEGV);
            mix(sigprocmask(SIG_BLOCK, &set, &cur));
            mix(sigprocmask(SIG_UNBLOCK, &set, NULL));
            mix(sigprocmask(SIG_SETMASK, &cur, NULL));
        }

        mix(mprotect(page, pagesz, PROT_READ));
        mix(mprotect(page, pagesz, PROT_READ | PROT_WRITE));
        page[i % pagesz] = (char)i;

        char *top = sbrk(4096);
        mix(top == (void *)-1);
        if (top != (void *)-1) {
            top[0] = 1;
            mix(sbrk(-4096) == (void *)-1);
        }

        char *p = mmap(NULL, pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        mix(p == MAP_FAILED);
        if (p != MAP_FAILED) {
            p[0] = 2;
            mix(munmap(p, pagesz));
        }

        mix(fcntl(fds[0], F_GETFD));
        mix(fcntl(fds[0], F_SETFD, i % 2 ? FD_CLOEXEC : 0));
        mix(fcntl(fds[0], F_GETFD));
        int fl = fcntl(fds[1], F_GETFL);
        mix(fl);
        mix(fcntl(fds[1], F_SETFL, fl | O_NONBLOCK));
        mix(fcntl(fds[1], F_SETFL, fl));

        mix(isatty(0));
        mix(isatty(fds[0]));
        struct winsize ws;
        mix(ioctl(1, TIOCGWINSZ, &ws));

        struct rlimit rl;
        mix(getrlimit(RLIMIT_NOFILE, &rl));
        mix((long)rl.rlim_cur);
    }
    printf("fp_exec_calls: %d iterations, raised %ld, handler a %d b %d\n", n, raised,
           (int)ran_a, (int)ran_b);
    printf("fp_exec_calls: digest %016lx\n", digest);
    return 0;
}
