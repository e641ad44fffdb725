/* Anonymous private memory mapped and unmapped in a loop, the way an allocator grows and
 * shrinks its arenas: mmap without an address (the kernel picks the place), mmap with
 * MAP_FIXED over part of an earlier mapping, a MAP_NORESERVE reservation, each filled and
 * summed, then unmapped. Prints the sum and where each mapping landed relative to the first
 * (a replay that placed one elsewhere prints another line). argv[1]: rounds (default 300). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? strtol(argv[1], NULL, 0) : 300;
    unsigned long long sum = 0, where = 0;
    uintptr_t first = 0;
    for (long i = 0; i < n; i++) {
        size_t len = 4096 * (1 + i % 7);
        unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                -1, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        if (!first) first = (uintptr_t)p;
        /* The second page again, fresh, over the first mapping. */
        if (len > 4096 &&
            mmap(p + 4096, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                 -1, 0) != p + 4096) {
            perror("mmap MAP_FIXED");
            return 1;
        }
        unsigned char *r = mmap(NULL, 1 << 20, PROT_NONE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r == MAP_FAILED) {
            perror("mmap MAP_NORESERVE");
            return 1;
        }
        for (size_t j = 0; j < len; j += 512) p[j] = (unsigned char)(i + j);
        for (size_t j = 0; j < len; j += 512) sum += p[j];
        where = where * 31 + ((uintptr_t)p - first) + ((uintptr_t)r - first);
        munmap(r, 1 << 20);
        munmap(p, len);
    }
    printf("fp_anon_maps: %ld rounds, sum %llu, placement %llx\n", n, sum, where);
    return 0;
}
