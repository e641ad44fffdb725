/* Processes recorded in parallel (deja's lanes).
 *
 * `lanes parallel`: forks two children that exec this program again (`lanes work N`), each
 * computing and making syscalls (writes to a pipe read by the parent, getppid), so the
 * recorder can run them on two CPUs; prints what it read and the children's results.
 *
 * `lanes shared FILE`: the parent maps FILE shared and forks a child that execs this program
 * (`lanes peer FILE`), which maps the same file shared (the recorder moves it back into the
 * parent's lane there); the two then hand a counter back and forth through the mapping with
 * spin-waits, and each prints how many times it had to wait: numbers that depend on the
 * interleaving.
 *
 * `lanes stop`: forks a child that execs this program (`lanes sleeper`), stops it with
 * SIGSTOP, sees it stopped, continues it with SIGCONT and waits for its end.
 *
 * `lanes chatter [LINES]`: forks a child that execs this program (`lanes talk child LINES`);
 * parent and child then each compute and print LINES lines (40) to the same stdout,
 * interleaved as it happens.
 *
 * `lanes stopcont`: forks a child that execs this program (`lanes quiet`) and sends it SIGSTOP
 * then SIGCONT at once, while it starts (rr's exec_stopsig); waits for its end. */
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROUNDS 2000

static unsigned long work(unsigned long n, int out) {
    unsigned long s = 0;
    for (unsigned long i = 0; i < n; i++) {
        s += i * 2654435761u ^ (s >> 7);
        if (i % (n / 16 + 1) == 0) {
            char line[64];
            int len = snprintf(line, sizeof line, "step %lu ppid-ok %d\n", i, getppid() > 0);
            if (write(out, line, len) != len) exit(4);
        }
    }
    return s;
}

static void spin_handoff(volatile long *counter, long me, const char *who) {
    unsigned long waits = 0;
    for (long round = 0; round < ROUNDS; round++) {
        while (*counter % 2 != me) {
            waits++;
            sched_yield();
        }
        (*counter)++;
    }
    printf("%s: done at %ld after %lu waits\n", who, *counter, waits);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "work")) {
        printf("%lu\n", work(strtoul(argv[2], 0, 10), 1));
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "peer")) {
        int fd = open(argv[2], O_RDWR);
        volatile long *c = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (c == MAP_FAILED) return 5;
        spin_handoff(c, 1, "peer");
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "shared")) {
        int fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || ftruncate(fd, 4096)) return 6;
        volatile long *c = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (c == MAP_FAILED) return 7;
        fflush(stdout);
        pid_t p = fork();
        if (p == 0) {
            execl("/proc/self/exe", argv[0], "peer", argv[2], (char *)0);
            _exit(8);
        }
        spin_handoff(c, 0, "parent");
        int st;
        waitpid(p, &st, 0);
        printf("peer status %d\n", WEXITSTATUS(st));
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "parallel")) {
        int fds[2][2];
        pid_t kids[2];
        for (int k = 0; k < 2; k++) {
            if (pipe(fds[k])) return 9;
            fflush(stdout);
            kids[k] = fork();
            if (kids[k] == 0) {
                dup2(fds[k][1], 1);
                close(fds[k][0]);
                execl("/proc/self/exe", argv[0], "work", k ? "30000000" : "20000000", (char *)0);
                _exit(8);
            }
            close(fds[k][1]);
        }
        for (int k = 0; k < 2; k++) {
            char buf[4096];
            ssize_t n, total = 0;
            while ((n = read(fds[k][0], buf, sizeof buf)) > 0) total += n;
            int st;
            waitpid(kids[k], &st, 0);
            printf("child %d: %zd bytes, status %d\n", k, total, WEXITSTATUS(st));
        }
        return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "talk")) {
        unsigned long s = 0;
        int lines = argc > 3 ? atoi(argv[3]) : 40;
        for (int i = 0; i < lines; i++) {
            for (unsigned long k = 0; k < 3000000; k++) s += k * 2654435761u ^ (s >> 7);
            printf("%s %d %lu\n", argv[2], i, s % 1000);
            fflush(stdout);
        }
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "chatter")) {
        char *lines = argc > 2 ? argv[2] : "40";
        fflush(stdout);
        pid_t p = fork();
        if (p == 0) {
            execl("/proc/self/exe", argv[0], "talk", "child", lines, (char *)0);
            _exit(8);
        }
        char *args[] = {argv[0], "talk", "parent", lines, 0};
        int r = main(4, args);
        int st;
        waitpid(p, &st, 0);
        printf("child status %d\n", WEXITSTATUS(st));
        return r;
    }
    if (argc == 2 && !strcmp(argv[1], "quiet")) {
        return 5;
    }
    if (argc == 2 && !strcmp(argv[1], "stopcont")) {
        fflush(stdout);
        pid_t p = fork();
        if (p == 0) {
            execl("/proc/self/exe", argv[0], "quiet", (char *)0);
            _exit(8);
        }
        sched_yield();
        kill(p, SIGSTOP);
        kill(p, SIGCONT);
        int st;
        waitpid(p, &st, 0);
        printf("child exited %d with %d\n", WIFEXITED(st), WEXITSTATUS(st));
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "sleeper")) {
        for (int i = 0; i < 5; i++) {
            printf("sleeper %d\n", i);
            fflush(stdout);
            usleep(20000);
        }
        return 3;
    }
    if (argc == 2 && !strcmp(argv[1], "stop")) {
        fflush(stdout);
        pid_t p = fork();
        if (p == 0) {
            execl("/proc/self/exe", argv[0], "sleeper", (char *)0);
            _exit(8);
        }
        usleep(30000);
        kill(p, SIGSTOP);
        int st;
        waitpid(p, &st, WUNTRACED);
        printf("stopped %d by %d\n", WIFSTOPPED(st), WSTOPSIG(st));
        fflush(stdout);
        usleep(20000);
        kill(p, SIGCONT);
        waitpid(p, &st, 0);
        printf("exited %d with %d\n", WIFEXITED(st), WEXITSTATUS(st));
        return 0;
    }
    fprintf(stderr, "usage: lanes parallel | shared FILE | stop | chatter | stopcont\n");
    return 2;
}
