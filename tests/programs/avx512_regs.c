/* Puts known values in AVX-512 registers (zmm0, zmm17, k1) and calls probe() with them there,
 * for gdb's `p $zmm0` and `info registers k1`. Built with -mavx512f; run only where the CPU
 * has AVX-512. */
#include <immintrin.h>
#include <stdio.h>

__attribute__((noinline)) void probe(void) { __asm__ volatile("" ::: "memory"); }

int main(void) {
    __m512i v = _mm512_set1_epi32(0x11223344);
    __asm__ volatile("vmovdqa64 %0, %%zmm0" ::"v"(v));
    __asm__ volatile("vmovdqa64 %%zmm0, %%zmm17" :::);
    __asm__ volatile("movq $0x5a5a, %%rax\n\tkmovw %%eax, %%k1" ::: "rax");
    probe();
    printf("avx512 registers set\n");
    return 0;
}
