/* A program to debug backwards: a loop whose iterations a breakpoint tells apart, a call to
 * step into and out of, a raw syscall with a label after it, a global another thread writes
 * three times (for a watchpoint), and a signal handled mid-program. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

long shared = 0;
volatile int got = 0;

/* The raw getppid syscall; `after_syscall` labels the instruction after it. */
__attribute__((noinline)) long raw_getppid(void) {
    long r;
    __asm__ volatile("syscall\n.globl after_syscall\nafter_syscall:"
                     : "=a"(r)
                     : "a"((long)SYS_getppid)
                     : "rcx", "r11", "memory");
    return r;
}

__attribute__((noinline)) long step(int i) {
    long v = i * 10 + raw_getppid() % 1;
    return v;
}

void *writer(void *arg) {
    for (int k = 1; k <= 3; k++)
        __atomic_store_n(&shared, k * 7, __ATOMIC_SEQ_CST);
    return arg;
}

static void on_usr1(int sig) { got = sig; }

int main(void) {
    long total = 0;
    for (int i = 0; i < 5; i++) {
        total += step(i);
        total += 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, writer, NULL);
    pthread_join(t, NULL);
    signal(SIGUSR1, on_usr1);
    raise(SIGUSR1);
    printf("total=%ld shared=%ld got=%d\n", total, shared, got);
    return 0;
}
