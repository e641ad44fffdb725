/* SIGUSR1 sent from another process to a child that computes without syscalls.
 *
 * The parent installs a SIGUSR1 handler (the child inherits it), makes a pipe and forks. The
 * child spins on `while (!stop) counter++;` (volatile, no syscall); the handler notes the
 * counter it interrupted and sets `stop`. The child then writes that counter into the pipe and
 * exits with status counter % 100. The parent sleeps argv[1] milliseconds (default 30), sends
 * SIGUSR1 with kill(), reads what the child wrote, waits for it and prints both.
 *
 * Where the signal lands in the child's loop is pure timing: native runs print different
 * counters (and exit statuses). An exact replay delivers it at the recorded iteration. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile long counter;
static volatile long seen = -1;
static volatile sig_atomic_t stop;

static void on_usr1(int sig) {
    (void)sig;
    seen = counter;
    stop = 1;
}

int main(int argc, char **argv) {
    long ms = argc > 1 ? strtol(argv[1], NULL, 0) : 30;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    int p[2];
    if (pipe(p) != 0) {
        perror("pipe");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        close(p[0]);
        while (!stop) counter++;
        char buf[128];
        int len = snprintf(buf, sizeof buf, "child: SIGUSR1 landed at counter %ld\n", seen);
        if (write(p[1], buf, len) != len) _exit(101);
        _exit((int)(seen % 100));
    }
    close(p[1]);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    if (kill(child, SIGUSR1) != 0) {
        perror("kill");
        return 1;
    }
    char buf[256];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(p[0], buf + got, sizeof buf - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    buf[got] = 0;
    int status = 0;
    if (waitpid(child, &status, 0) != child) {
        perror("waitpid");
        return 1;
    }
    printf("parent: the child wrote: %s", buf);
    if (WIFEXITED(status))
        printf("parent: the child exited with status %d\n", WEXITSTATUS(status));
    else
        printf("parent: the child ended with wait status %#x\n", status);
    return 0;
}
