/* Pure computation for benchmarks: spin.c N runs N iterations of an LCG-ish mix. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    unsigned long long n = argc > 1 ? strtoull(argv[1], NULL, 0) : 100000000ULL;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (unsigned long long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x += i;
    }
    printf("spin %llu -> %016llx\n", n, (unsigned long long)x);
    return 0;
}
