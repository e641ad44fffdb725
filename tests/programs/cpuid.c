/* cpuid leaves 0 and 1. Deterministic natively on one CPU (leaf 1 EBX carries the APIC id of
 * the CPU the instruction ran on); the test only checks that replay prints what recording did. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

int main(void) {
    uint32_t r[4];
    cpuid(0, 0, r);
    char vendor[13];
    memcpy(vendor, &r[1], 4);
    memcpy(vendor + 4, &r[3], 4);
    memcpy(vendor + 8, &r[2], 4);
    vendor[12] = 0;
    printf("leaf0 max=%u vendor=%s\n", r[0], vendor);
    cpuid(1, 0, r);
    printf("leaf1 eax=%08x ebx=%08x ecx=%08x edx=%08x\n", r[0], r[1], r[2], r[3]);
    printf("family=%u model=%u stepping=%u\n", (r[0] >> 8) & 0xf, (r[0] >> 4) & 0xf, r[0] & 0xf);
    return 0;
}
