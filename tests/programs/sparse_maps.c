/* Huge sparse files mapped: a 1 TiB memfd with two bytes of data, mapped private and shared,
 * and a 64 GiB sparse file written through a shared mapping, a hole punched and mapped again.
 * The trace must stay small: holes are stored as holes. argv[1]: scratch file. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static int check(const char *what, int ok) {
    printf("%s: %s\n", what, ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: sparse_maps FILE\n");
        return 2;
    }
    int bad = 0;
    uint64_t tib = 1ULL << 40;
    int m = memfd_create("huge", 0);
    ftruncate(m, tib);
    pwrite(m, "x", 1, 0);
    pwrite(m, "y", 1, tib / 2);
    for (int shared = 0; shared < 2; shared++) {
        char *p = mmap(NULL, tib, PROT_READ, shared ? MAP_SHARED : MAP_PRIVATE, m, 0);
        bad |= check(shared ? "1 TiB memfd, shared" : "1 TiB memfd, private",
                     p != MAP_FAILED && p[0] == 'x' && p[tib / 2] == 'y' && p[tib - 1] == 0);
        munmap(p, tib);
    }
    off_t size = 64LL << 30;
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    pwrite(fd, "e", 1, size);
    char *f = mmap(NULL, size + 1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (f == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    f[size / 2] = 1;
    f[size / 2 + 65536] = 2;
    munmap(f, size + 1);
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, size / 2, 4096);
    f = mmap(NULL, size + 1, PROT_READ, MAP_SHARED, fd, 0);
    bad |= check("64 GiB file after a punched hole",
                 f[size / 2] == 0 && f[size / 2 + 65536] == 2 && f[size] == 'e');
    return bad;
}
