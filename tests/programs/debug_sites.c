/* Places a debugger may stop at that the replay must handle exactly: a syscall instruction, an
 * rdtsc instruction (both at global labels gdb can break on) and a signal handler. Prints what
 * each returned, which differs between runs. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>

volatile int handled = 0;

static void on_usr1(int sig) { handled += sig; }

__attribute__((noinline)) static long raw_getpid(void) {
    long ret;
    __asm__ volatile(".globl syscall_site\nsyscall_site:\n\tsyscall"
                     : "=a"(ret)
                     : "a"((long)SYS_getpid)
                     : "rcx", "r11", "memory");
    return ret;
}

__attribute__((noinline)) static uint64_t read_tsc(void) {
    uint32_t lo, hi;
    __asm__ volatile(".globl rdtsc_site\nrdtsc_site:\n\trdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

int main(void) {
    signal(SIGUSR1, on_usr1);
    long pid = raw_getpid();
    uint64_t tsc = read_tsc();
    raise(SIGUSR1);
    printf("pid=%ld tsc=%llu handled=%d\n", pid, (unsigned long long)tsc, handled);
    return 0;
}
