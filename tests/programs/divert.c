/* Functions for gdb to call in a diversion (tests/gdb_divert.rs): `add` computes, `bump`
 * changes a global and prints, `crash` faults, `poke` writes into shared memory, `spin` loops
 * until `spinning` is cleared. main's output and exit status (3) are what the replay must
 * still produce afterwards. */
#include <stdio.h>
#include <sys/mman.h>

int global = 7;
int counter;
int *shared;

int add(int a, int b) { return a + b; }

int bump(int by) {
    global += by;
    printf("bump: global=%d\n", global);
    fflush(stdout);
    return global;
}

int crash(void) {
    volatile int *p = 0;
    return *p;
}

volatile int spinning = 1;

int spin(void) {
    while (spinning)
        ;
    return 42;
}

int poke(int v) {
    *shared = v;
    return *shared;
}

__attribute__((noinline)) void stop_here(int at) { counter += at; }

int main(void) {
    shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return 1;
    *shared = 5;
    int x = 1;
    for (int i = 0; i < 3; i++) {
        stop_here(i);
        x += i;
    }
    printf("x=%d global=%d counter=%d shared=%d\n", x, global, counter, *shared);
    return 3;
}
