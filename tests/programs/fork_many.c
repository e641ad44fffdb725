/* Many short-lived children: forks N children (argv[1], default 1000), child i exiting at once
 * with status i % 256. At most 8 are alive at a time (the parent reaps one with wait() before
 * forking more), so a tracer that keeps a descriptor or two per live task stays within a small
 * descriptor limit, but one that leaks a descriptor per child does not. The parent prints how
 * many it reaped and a checksum of their statuses (which does not depend on the reaping order). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LIVE 8

static long reaped, sum, weighted;

static int reap_one(void) {
    int st;
    pid_t pid = wait(&st);
    if (pid < 0) {
        perror("wait");
        return -1;
    }
    if (!WIFEXITED(st)) {
        printf("a child did not exit normally: status %#x\n", st);
        return -1;
    }
    reaped++;
    sum += WEXITSTATUS(st);
    weighted += (long)WEXITSTATUS(st) * WEXITSTATUS(st);
    return 0;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    int live = 0;
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        if (live == MAX_LIVE) {
            if (reap_one() < 0) return 1;
            live--;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) _exit(i % 256);
        live++;
    }
    while (live > 0) {
        if (reap_one() < 0) return 1;
        live--;
    }
    printf("forked %d children, reaped %ld, status sum %ld, sum of squares %ld\n", n, reaped, sum,
           weighted);
    return reaped == n ? 0 : 1;
}
