/* Many small reads and writes (the fast path's bread and butter): reads FILE one byte at a time
 * with read(2) and writes each line, as soon as it is complete, to stdout with write(2); at the
 * end prints how many bytes and lines it saw and a checksum. Deterministic for a given file. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fp_small_io FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    char line[4096];
    size_t len = 0;
    long bytes = 0, lines = 0;
    unsigned long sum = 0;
    for (;;) {
        char c;
        ssize_t n = read(fd, &c, 1);
        if (n < 0) {
            perror("read");
            return 1;
        }
        if (n == 0) break;
        bytes++;
        sum = sum * 131 + (unsigned char)c;
        if (len < sizeof line) line[len++] = c;
        if (c == '\n') {
            if (write(1, line, len) != (ssize_t)len) return 1;
            len = 0;
            lines++;
        }
    }
    if (len > 0 && write(1, line, len) != (ssize_t)len) return 1;
    close(fd);
    char tail[128];
    int n = snprintf(tail, sizeof tail, "fp_small_io: %ld bytes, %ld lines, sum %lu\n", bytes,
                     lines, sum);
    if (write(1, tail, n) != n) return 1;
    return 0;
}
