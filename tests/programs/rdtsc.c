/* rdtsc and rdtscp executed directly (no library call): differ on every run. */
#include <stdint.h>
#include <stdio.h>

static inline uint64_t rdtsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline uint64_t rdtscp(uint32_t *aux) {
    uint32_t lo, hi, c;
    __asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(c));
    *aux = c;
    return ((uint64_t)hi << 32) | lo;
}

int main(void) {
    uint64_t a = rdtsc();
    uint64_t b = rdtsc();
    uint32_t aux = 0;
    uint64_t c = rdtscp(&aux);
    printf("rdtsc  %llu\n", (unsigned long long)a);
    printf("rdtsc  %llu (delta %llu)\n", (unsigned long long)b, (unsigned long long)(b - a));
    printf("rdtscp %llu aux %u\n", (unsigned long long)c, aux);
    /* A burst, folded into one value. */
    uint64_t acc = 0;
    for (int i = 0; i < 200; i++)
        acc = acc * 1000003u ^ rdtsc();
    for (int i = 0; i < 50; i++)
        acc = acc * 1000003u ^ rdtscp(&aux);
    printf("digest %llu\n", (unsigned long long)acc);
    return 0;
}
