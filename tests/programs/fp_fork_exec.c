/* Fork and exec from a program using the fast path. The parent makes buffered calls (one-byte
 * reads of /dev/zero, getpid), forks; the child makes buffered calls of its own (in the copy
 * of the parent's patched code and library) then execs argv[1] with the rest of the arguments
 * (a program that buffers too, or /bin/true); the parent makes more buffered calls, waits and
 * prints the child's status. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static long zero_reads(int n) {
    int z = open("/dev/zero", O_RDONLY);
    if (z < 0) {
        perror("/dev/zero");
        exit(1);
    }
    long ok = 0;
    for (int i = 0; i < n; i++) {
        char c = 1;
        if (read(z, &c, 1) == 1 && c == 0) ok++;
        if (getpid() <= 0) ok--;
    }
    close(z);
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fp_fork_exec PROG [ARGS...]\n");
        return 2;
    }
    printf("parent before fork: %ld\n", zero_reads(500));
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        printf("child before exec: %ld\n", zero_reads(500));
        fflush(stdout);
        execv(argv[1], argv + 1);
        perror("execv");
        _exit(127);
    }
    long ok = zero_reads(500);
    int st;
    if (waitpid(pid, &st, 0) != pid) {
        perror("waitpid");
        return 1;
    }
    printf("parent after fork: %ld; child exited %d status %d\n", ok, WIFEXITED(st),
           WEXITSTATUS(st));
    return 0;
}
