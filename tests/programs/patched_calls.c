/* Calls glibc's getpid() and read() (syscall sites deja's fast path patches) in a loop, so a
 * debugger can step across them in the replay. Prints what the calls returned. With an
 * argument N, first calls getpid() N times (a replay spending its time in deja's library,
 * to interrupt). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long spins = argc > 1 ? atol(argv[1]) : 0;
    long pids = 0;
    for (long k = 0; k < spins; k++)
        pids += getpid();
    int fds[2];
    if (pipe(fds) != 0)
        return 1;
    if (write(fds[1], "deja", 4) != 4)
        return 1;
    long sum = 0;
    int pid = 0;
    char c = 0;
    for (int i = 0; i < 40; i++) {
        pid = getpid();
        ssize_t n = read(fds[0], &c, 1);
        sum += c * (i + 1) + n; /* after the read */
        if (write(fds[1], &c, 1) != 1)
            return 1;
    }
    printf("pid=%d sum=%ld last=%c pids=%ld\n", pid, sum, c, pids);
    return 0;
}
