/* TCP over 127.0.0.1 in one process: listen on port 0, non-blocking connect, accept,
 * send/recv both ways, getsockname/getpeername/getsockopt. The ephemeral ports differ per run. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port_of(struct sockaddr_in *a) { return ntohs(a->sin_port); }

int main(void) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ls < 0) { perror("socket"); return 1; }
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
    if (listen(ls, 4) < 0) { perror("listen"); return 1; }
    struct sockaddr_in la;
    socklen_t sl = sizeof la;
    getsockname(ls, (struct sockaddr *)&la, &sl);
    printf("listening on %s:%d\n", inet_ntoa(la.sin_addr), port_of(&la));

    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int r = connect(c, (struct sockaddr *)&la, sizeof la);
    int e = errno;
    printf("connect: %d %s\n", r, r < 0 ? (e == EINPROGRESS ? "EINPROGRESS" : strerror(e)) : "ok");

    struct sockaddr_in pa;
    sl = sizeof pa;
    int s = accept4(ls, (struct sockaddr *)&pa, &sl, SOCK_CLOEXEC);
    if (s < 0) { perror("accept"); return 1; }
    printf("accepted peer %s:%d\n", inet_ntoa(pa.sin_addr), port_of(&pa));

    struct pollfd pfd = {.fd = c, .events = POLLOUT};
    int n = poll(&pfd, 1, 2000);
    printf("poll connect: %d revents %#x\n", n, pfd.revents);
    int err = -1;
    sl = sizeof err;
    getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &sl);
    printf("SO_ERROR %d\n", err);
    int nodelay = -1;
    sl = sizeof nodelay;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &nodelay, &sl);
    printf("TCP_NODELAY %d\n", nodelay != 0);

    struct sockaddr_in ca, cp;
    sl = sizeof ca;
    getsockname(c, (struct sockaddr *)&ca, &sl);
    sl = sizeof cp;
    getpeername(c, (struct sockaddr *)&cp, &sl);
    printf("client local port %d peer port %d\n", port_of(&ca), port_of(&cp));

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char msg[128], buf[256];
    int len = snprintf(msg, sizeof msg, "GET /%ld HTTP/1.0\r\n\r\n", ts.tv_nsec);
    ssize_t w = send(c, msg, len, 0);
    memset(buf, 0, sizeof buf);
    ssize_t got = recv(s, buf, sizeof buf - 1, 0);
    printf("server got %zd of %zd: %.*s\n", got, w, (int)strcspn(buf, "\r"), buf);
    len = snprintf(msg, sizeof msg, "HTTP/1.0 200 OK port=%d", port_of(&pa));
    send(s, msg, len, 0);
    pfd.events = POLLIN;
    poll(&pfd, 1, 2000);
    memset(buf, 0, sizeof buf);
    got = recv(c, buf, sizeof buf - 1, 0);
    printf("client got %zd: %s\n", got, buf);
    got = recv(c, buf, sizeof buf, 0);
    printf("client recv nothing: %zd %s\n", got, got < 0 && errno == EAGAIN ? "EAGAIN" : "");
    close(s);
    poll(&pfd, 1, 2000);
    got = recv(c, buf, sizeof buf, 0);
    printf("client recv after server close: %zd\n", got);
    close(c);
    close(ls);
    return 0;
}
