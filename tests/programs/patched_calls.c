/* Calls glibc's getpid() and read() (syscall sites deja's fast path patches) in a loop, so a
 * debugger can step across them in the replay. Prints what the calls returned. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
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
    printf("pid=%d sum=%ld last=%c\n", pid, sum, c);
    return 0;
}
