/* Writes zeros to the file argv[1] until its file system is full, says how much it wrote,
   and exits 7: the recording's own disk fills up under it. With a second argument, it then
   reads 2 MiB of random bytes (a payload no reserve holds) before it exits. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    static char buf[65536];
    if (argc < 2) return 2;
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return 2;
    unsigned long total = 0;
    for (;;) {
        ssize_t n = write(fd, buf, sizeof buf);
        if (n <= 0) {
            printf("fill_disk: full after %lu bytes (%s)\n", total, n < 0 ? strerror(errno) : "0");
            break;
        }
        total += (unsigned long)n;
    }
    fflush(stdout);
    if (argc > 2) {
        size_t len = 2 << 20, got = 0;
        char *big = malloc(len);
        int r = open("/dev/urandom", O_RDONLY);
        if (!big || r < 0) return 2;
        while (got < len) {
            ssize_t n = read(r, big + got, len - got);
            if (n <= 0) return 2;
            got += (size_t)n;
        }
    }
    return 7;
}
