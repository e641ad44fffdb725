/* The 16 AT_RANDOM bytes the kernel puts on the initial stack (no system call involved). */
#include <stdio.h>
#include <sys/auxv.h>

int main(void) {
    const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
    if (!r) { printf("no AT_RANDOM\n"); return 1; }
    printf("AT_RANDOM ");
    for (int i = 0; i < 16; i++) printf("%02x", r[i]);
    printf("\n");
    printf("AT_PAGESZ %lu AT_HWCAP %lx\n", getauxval(AT_PAGESZ), getauxval(AT_HWCAP));
    return 0;
}
