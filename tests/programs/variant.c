/* Two builds of one program that differ in a single syscall (-DVARIANT=1: getpid, else getppid),
 * with identical layout: the divergence test swaps one for the other inside a trace. */
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    printf("before the syscall\n");
    fflush(stdout);
#if VARIANT == 1
    long r = syscall(SYS_getpid);
#else
    long r = syscall(SYS_getppid);
#endif
    printf("positive: %d\n", r > 0);
    return 0;
}
