/* AF_UNIX socketpairs (stream and datagram): send/recv, sendmsg/recvmsg, shutdown. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int s[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) < 0) { perror("socketpair"); return 1; }
    char msg[96], buf[256];
    int len = snprintf(msg, sizeof msg, "stream ping %d %ld", (int)getpid(), ts.tv_nsec);
    ssize_t w = send(s[0], msg, len, 0);
    memset(buf, 0, sizeof buf);
    ssize_t r = recv(s[1], buf, sizeof buf - 1, 0);
    printf("a->b sent %zd got %zd: %s\n", w, r, buf);
    len = snprintf(msg, sizeof msg, "stream pong %ld", ts.tv_nsec ^ 0x5a5a5a);
    w = write(s[1], msg, len);
    memset(buf, 0, sizeof buf);
    r = read(s[0], buf, sizeof buf - 1);
    printf("b->a sent %zd got %zd: %s\n", w, r, buf);

    /* sendmsg / recvmsg with two iovecs each */
    char h1[] = "head:", h2[32];
    int l2 = snprintf(h2, sizeof h2, "%ld", (long)ts.tv_sec);
    struct iovec wv[2] = {{h1, 5}, {h2, l2}};
    struct msghdr wm = {.msg_iov = wv, .msg_iovlen = 2};
    w = sendmsg(s[0], &wm, 0);
    char r1[3] = {0}, r2[64] = {0};
    struct iovec rv[2] = {{r1, 2}, {r2, sizeof r2 - 1}};
    struct msghdr rm = {.msg_iov = rv, .msg_iovlen = 2};
    r = recvmsg(s[1], &rm, 0);
    printf("sendmsg %zd recvmsg %zd: [%.2s][%s] flags %d\n", w, r, r1, r2, rm.msg_flags);

    shutdown(s[0], SHUT_WR);
    r = recv(s[1], buf, sizeof buf, 0);
    printf("recv after shutdown: %zd\n", r);
    close(s[0]);
    close(s[1]);

    int d[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, d) < 0) { perror("socketpair dgram"); return 1; }
    for (int i = 0; i < 3; i++) {
        len = snprintf(msg, sizeof msg, "datagram %d/%ld", i, ts.tv_nsec + i);
        send(d[0], msg, len, 0);
    }
    for (int i = 0; i < 3; i++) {
        memset(buf, 0, sizeof buf);
        r = recv(d[1], buf, 12, 0); /* truncates */
        printf("dgram %d: %zd [%s]\n", i, r, buf);
    }
    r = recv(d[1], buf, sizeof buf, MSG_DONTWAIT);
    printf("dgram empty: %zd\n", r);
    close(d[0]);
    close(d[1]);
    return 0;
}
