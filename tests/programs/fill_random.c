/* Reads random bytes 64 KiB at a time and prints a line every 16 reads, forever: each read is
   a payload the trace must keep, so a recording on a small file system fills it up. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(void) {
    static char buf[65536];
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0) return 2;
    for (unsigned long i = 0;; i++) {
        if (read(fd, buf, sizeof buf) != (ssize_t)sizeof buf) return 3;
        if (i % 16 == 0) {
            printf("fill_random: %lu reads\n", i);
            fflush(stdout);
        }
    }
}
