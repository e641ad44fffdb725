/* Read a large file (the test makes a 3 MiB one) with big read()s and print a checksum.
 * The test changes the file after recording: replay must report the original checksum. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: bigread FILE\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 1; }
    size_t cap = 4 << 20; /* one read can return the whole file */
    unsigned char *buf = malloc(cap);
    uint64_t h = 0xcbf29ce484222325ull;
    size_t total = 0;
    int calls = 0;
    for (;;) {
        ssize_t n = read(fd, buf, cap);
        calls++;
        if (n < 0) { perror("read"); return 1; }
        if (n == 0) break;
        for (ssize_t i = 0; i < n; i++) h = (h ^ buf[i]) * 0x100000001b3ull;
        total += n;
    }
    /* pread at a few offsets, too */
    unsigned char small[16];
    ssize_t pn = pread(fd, small, sizeof small, total / 2);
    printf("total %zu bytes\n", total);
    printf("fnv1a %016llx\n", (unsigned long long)h);
    printf("pread %zd:", pn);
    for (ssize_t i = 0; i < pn; i++) printf(" %02x", small[i]);
    printf("\n");
    (void)calls;
    close(fd);
    free(buf);
    return 0;
}
