/* Children that die by signals. The first child dereferences a bad pointer (SIGSEGV); the second
 * blocks in read() on a pipe nobody writes to until the parent kills it with SIGKILL. The parent
 * prints WIFEXITED, WIFSIGNALED and WTERMSIG of each. The children turn core dumps off
 * (PR_SET_DUMPABLE 0) so no core file is written. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void report(const char *what, pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) {
        perror("waitpid");
        return;
    }
    printf("%s: WIFEXITED %d WIFSIGNALED %d WTERMSIG %d (%s)\n", what, WIFEXITED(st),
           WIFSIGNALED(st), WIFSIGNALED(st) ? WTERMSIG(st) : 0,
           WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "-");
}

int main(void) {
    printf("parent starts\n");
    fflush(stdout);
    pid_t segv = fork();
    if (segv == 0) {
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        volatile int *bad = (volatile int *)16;
        *bad = 1;
        _exit(0); /* not reached */
    }
    report("segv child", segv);

    int p[2];
    if (pipe(p) < 0) {
        perror("pipe");
        return 1;
    }
    pid_t blocked = fork();
    if (blocked == 0) {
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        close(p[1]);
        char c;
        ssize_t n = read(p[0], &c, 1); /* blocks: the parent keeps the write end open */
        _exit(n == 0 ? 3 : 4);      /* not reached */
    }
    close(p[0]);
    /* Let the child get into its read (not needed for correctness: SIGKILL works anywhere). */
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    kill(blocked, SIGKILL);
    report("blocked child", blocked);
    close(p[1]);
    printf("parent done\n");
    return 0;
}
