/* poll and epoll on a pipe: readiness, timeouts, and the data. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(void) {
    int p[2];
    if (pipe2(p, O_NONBLOCK) < 0) { perror("pipe2"); return 1; }

    struct pollfd pfd = {.fd = p[0], .events = POLLIN};
    int n = poll(&pfd, 1, 0);
    printf("poll empty: %d revents %#x\n", n, pfd.revents);

    long long t0 = now_ns();
    n = poll(&pfd, 1, 30); /* times out */
    long long t1 = now_ns();
    printf("poll timeout: %d after %lld ns\n", n, t1 - t0);

    char msg[64];
    int len = snprintf(msg, sizeof msg, "poll data %lld", t1);
    write(p[1], msg, len);
    n = poll(&pfd, 1, 1000);
    printf("poll ready: %d revents %#x\n", n, pfd.revents);
    char buf[128] = {0};
    ssize_t r = read(p[0], buf, sizeof buf - 1);
    printf("read %zd: %s\n", r, buf);
    r = read(p[0], buf, sizeof buf);
    printf("read empty nonblocking: %zd\n", r);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1234567890abcdefULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) < 0) { perror("epoll_ctl"); return 1; }
    struct epoll_event out[4];
    memset(out, 0, sizeof out);
    t0 = now_ns();
    n = epoll_wait(ep, out, 4, 20);
    t1 = now_ns();
    printf("epoll timeout: %d after %lld ns\n", n, t1 - t0);
    len = snprintf(msg, sizeof msg, "epoll data %lld", t1);
    write(p[1], msg, len);
    n = epoll_wait(ep, out, 4, 1000);
    printf("epoll ready: %d events %#x data %#llx\n", n, out[0].events,
           (unsigned long long)out[0].data.u64);
    memset(buf, 0, sizeof buf);
    r = read(p[0], buf, sizeof buf - 1);
    printf("read %zd: %s\n", r, buf);
    close(p[1]);
    n = epoll_wait(ep, out, 4, 1000);
    printf("epoll hup: %d events %#x\n", n, out[0].events);
    close(ep);
    close(p[0]);
    return 0;
}
