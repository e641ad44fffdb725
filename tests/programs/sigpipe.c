/* SIGPIPE: writing to a pipe whose only reader, a child, has exited.
 *
 * argv[1] is "ignore" (SIGPIPE is ignored: write fails with EPIPE, which is printed, and the
 * program exits 0) or "default" (the default action: the process dies by SIGPIPE right in the
 * write, so its shell status is 128 + 13 = 141 and the line after the write never appears). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    int ignore = !strcmp(mode, "ignore");
    if (!ignore && strcmp(mode, "default")) {
        fprintf(stderr, "usage: sigpipe ignore|default\n");
        return 2;
    }
    signal(SIGPIPE, ignore ? SIG_IGN : SIG_DFL);
    int p[2];
    if (pipe(p) < 0) {
        perror("pipe");
        return 1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* The reader: takes one message and leaves. */
        close(p[1]);
        char buf[64] = {0};
        ssize_t n = read(p[0], buf, sizeof buf - 1);
        _exit(n > 0 ? 0 : 1);
    }
    close(p[0]);
    if (write(p[1], "first message", 13) != 13) perror("first write");
    int st;
    waitpid(pid, &st, 0);
    printf("reader child exited with status %d; writing again (SIGPIPE %s)\n",
           WIFEXITED(st) ? WEXITSTATUS(st) : -1, ignore ? "ignored" : "default");
    fflush(stdout);
    ssize_t n = write(p[1], "second message", 14);
    int e = errno;
    printf("second write returned %zd errno %s\n", n, e == EPIPE ? "EPIPE" : strerror(e));
    return 0;
}
