/* fork, pipes, exec and wait statuses. The parent starts four children, one after the other:
 *
 *   talker   reads a line from the parent over one pipe, answers it (upper-cased, with its pid
 *            relation checked) over another, exits 11;
 *   echo     stdout redirected into a pipe, execs /bin/echo (exits 0);
 *   cat      stdin and stdout are pipes, execs /bin/cat: the parent sends it three lines, closes
 *            its stdin and reads them back until EOF (exits 0);
 *   quitter  _exit(42) at once.
 *
 * Each child first writes its name into a shared "arrivals" pipe it inherited; the parent prints
 * what arrived at the end (the parent's protocol fixes the order). The parent prints what came
 * through each pipe and, for each child in a fixed order, WIFEXITED and WEXITSTATUS from
 * waitpid. */
#define _GNU_SOURCE
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int arrivals[2];

static void arrive(const char *name) {
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%s ", name);
    if (write(arrivals[1], buf, n) != n) _exit(90);
}

static void xpipe(int p[2]) {
    if (pipe2(p, O_CLOEXEC) < 0) {
        perror("pipe2");
        exit(1);
    }
}

static pid_t xfork(void) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    return pid;
}

/* Reads until EOF (or the buffer is full); returns the length. */
static size_t read_all(int fd, char *buf, size_t cap) {
    size_t len = 0;
    while (len < cap - 1) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r <= 0) break;
        len += r;
    }
    buf[len] = 0;
    return len;
}

/* Reads one line (without the newline). */
static void read_line(int fd, char *buf, size_t cap) {
    size_t len = 0;
    char c;
    while (len < cap - 1 && read(fd, &c, 1) == 1 && c != '\n') buf[len++] = c;
    buf[len] = 0;
}

int main(void) {
    xpipe(arrivals);
    pid_t parent = getpid();
    pid_t pids[4];
    const char *names[4] = {"talker", "echo", "cat", "quitter"};

    /* talker */
    int to_talker[2], from_talker[2];
    xpipe(to_talker);
    xpipe(from_talker);
    pids[0] = xfork();
    if (pids[0] == 0) {
        arrive("talker");
        char line[128], reply[160];
        read_line(to_talker[0], line, sizeof line);
        for (char *p = line; *p; p++) *p = toupper((unsigned char)*p);
        int n = snprintf(reply, sizeof reply, "%s (my parent is the sender: %s)\n", line,
                         getppid() == parent ? "yes" : "no");
        if (write(from_talker[1], reply, n) != n) _exit(91);
        _exit(11);
    }
    close(to_talker[0]);
    close(from_talker[1]);
    const char *question = "hello talker\n";
    if (write(to_talker[1], question, strlen(question)) < 0) perror("write to talker");
    char answer[160];
    read_line(from_talker[0], answer, sizeof answer);
    printf("talker answered: %s\n", answer);
    close(to_talker[1]);
    close(from_talker[0]);

    /* echo */
    int echo_out[2];
    xpipe(echo_out);
    pids[1] = xfork();
    if (pids[1] == 0) {
        arrive("echo");
        dup2(echo_out[1], 1);
        char *argv[] = {"/bin/echo", "echoed", "by", "/bin/echo", NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    close(echo_out[1]);
    char buf[512];
    read_all(echo_out[0], buf, sizeof buf);
    close(echo_out[0]);
    printf("echo wrote: %s", buf);

    /* cat */
    int cat_in[2], cat_out[2];
    xpipe(cat_in);
    xpipe(cat_out);
    pids[2] = xfork();
    if (pids[2] == 0) {
        arrive("cat");
        dup2(cat_in[0], 0);
        dup2(cat_out[1], 1);
        char *argv[] = {"/bin/cat", NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    close(cat_in[0]);
    close(cat_out[1]);
    const char *lines = "first line for cat\nsecond line\nthird and last line\n";
    if (write(cat_in[1], lines, strlen(lines)) < 0) perror("write to cat");
    close(cat_in[1]);
    size_t got = read_all(cat_out[0], buf, sizeof buf);
    close(cat_out[0]);
    printf("cat gave back %zu bytes, %s:\n%s", got, strcmp(buf, lines) ? "different" : "the same",
           buf);

    /* quitter */
    pids[3] = xfork();
    if (pids[3] == 0) {
        arrive("quitter");
        _exit(42);
    }

    for (int i = 0; i < 4; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) != pids[i]) {
            perror("waitpid");
            return 1;
        }
        printf("child %s: exited %d status %d\n", names[i], WIFEXITED(st),
               WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    close(arrivals[1]);
    read_all(arrivals[0], buf, sizeof buf);
    printf("arrival order: %s\n", buf);
    return 0;
}
