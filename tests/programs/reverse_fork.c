/* A parent that keeps running (a loop to debug backwards) while its forked child works and
 * ends, then waits for it: going backwards with two processes alive. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

volatile long sink;

__attribute__((noinline)) long step(int i) {
    for (int k = 0; k < 100000; k++)
        sink += k;
    return i * 10 + getppid() % 1;
}

int main(void) {
    pid_t child = fork();
    if (child == 0) {
        long acc = 0;
        for (int i = 0; i < 40; i++)
            acc += step(i);
        printf("child done %ld\n", acc);
        return 7;
    }
    long total = 0;
    usleep(20000); /* the child runs meanwhile, and is alive through the loop */
    for (int i = 0; i < 4; i++)
        total += step(i);
    int status = 0;
    waitpid(child, &status, 0);
    printf("parent total=%ld child status=%d\n", total, WEXITSTATUS(status));
    return 0;
}
