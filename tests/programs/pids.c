/* Process ids: getpid, getppid, gettid, and the pid as seen through /proc/self. */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    printf("pid %d\n", (int)getpid());
    printf("ppid %d\n", (int)getppid());
    printf("tid %ld\n", (long)syscall(SYS_gettid));
    char link[64] = {0};
    ssize_t n = readlink("/proc/self", link, sizeof link - 1);
    printf("/proc/self -> %s (%zd)\n", n > 0 ? link : "?", n);
    printf("pgrp %d sid %d\n", (int)getpgrp(), (int)getsid(0));
    return 0;
}
