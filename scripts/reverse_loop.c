/* The program scripts/bench-reverse debugs backwards: ITERS iterations of some 0.4 ms of
 * computing and a syscall each, with marks at three spacings to reverse-continue to, and
 * `stop_here` near the end to start from. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

volatile long sink;
__attribute__((noinline)) void mark_near(int i) { sink += i; }
__attribute__((noinline)) void mark_mid(int i) { sink += i; }
__attribute__((noinline)) void mark_far(int i) { sink += i; }
__attribute__((noinline)) void stop_here(int i) { sink += i; }
__attribute__((noinline)) void work(void) {
    for (int k = 0; k < 200000; k++)
        sink += k;
}

int main(int argc, char **argv) {
    int iters = argc > 1 ? atoi(argv[1]) : 26000;
    int near = iters / 26, mid = iters / 10, far = iters / 3;
    for (int i = 0; i < iters; i++) {
        work();
        syscall(SYS_getppid);
        if (i % near == 0)
            mark_near(i);
        if (i % mid == 0)
            mark_mid(i);
        if (i % far == 0)
            mark_far(i);
        if (i == iters - near / 2)
            stop_here(i);
    }
    printf("%ld\n", sink);
    return 0;
}
