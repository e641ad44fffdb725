/* Two threads copy 4 MiB buffers back and forth with `rep movsb` (one instruction per copy,
 * which the CPU interrupts between its iterations), so a preemption very likely lands in the
 * middle of one. Prints a checksum that does not depend on the interleaving. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE (4u << 20)
#define ROUNDS 300

static void rep_movsb(void *dst, const void *src, size_t n) {
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

static void *worker(void *arg) {
    uintptr_t seed = (uintptr_t)arg;
    unsigned char *a = malloc(SIZE), *b = malloc(SIZE);
    if (!a || !b)
        abort();
    for (size_t i = 0; i < SIZE; i++)
        a[i] = (unsigned char)(i * 131 + seed);
    for (int r = 0; r < ROUNDS; r++) {
        rep_movsb(b, a, SIZE);
        b[r] ^= 1;
        rep_movsb(a, b, SIZE);
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < SIZE; i += 4096)
        sum += a[i] + a[i + 1];
    free(a);
    free(b);
    return (void *)(uintptr_t)sum;
}

int main(void) {
    pthread_t t[2];
    for (uintptr_t i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    uint64_t total = 0;
    for (int i = 0; i < 2; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        total += (uintptr_t)ret;
    }
    printf("checksum %llu\n", (unsigned long long)total);
    return 0;
}
