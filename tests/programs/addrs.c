/* Addresses that ASLR randomises natively (deja runs programs without ASLR). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static int global_var;

int main(void) {
    int stack_var = 0;
    void *small = malloc(32);
    void *big = malloc(4 << 20); /* served by mmap */
    void *anon = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("stack  %p\n", (void *)&stack_var);
    printf("global %p\n", (void *)&global_var);
    printf("main   %p\n", (void *)main);
    printf("libc   %p\n", (void *)printf);
    printf("malloc %p\n", small);
    printf("big    %p\n", big);
    printf("mmap   %p\n", anon);
    printf("brk    %p\n", sbrk(0));
    free(small);
    free(big);
    munmap(anon, 8192);
    return 0;
}
