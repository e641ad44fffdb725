/* A loop for conditional breakpoints and fast stepping: `f` is called with i = 0..n-1 (n from
 * the first argument, 40 by default) and counts its calls in a global; the one-line loop in
 * `main` (m iterations, the second argument, 3000 by default) is for `next` over many
 * instructions. scripts/bench-debug times gdb on it too. */
#include <stdio.h>
#include <stdlib.h>

volatile int counter = 0;
volatile long sink = 0;

__attribute__((noinline)) void f(int i) {
    counter++;
    sink += i;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 40;
    int m = argc > 2 ? atoi(argv[2]) : 3000;
    for (int i = 0; i < n; i++)
        f(i);
    long s = 0;
    for (int k = 0; k < m; k++) s += k % 7; /* one line */
    printf("counter=%d sink=%ld s=%ld\n", counter, sink, s);
    return 0;
}
