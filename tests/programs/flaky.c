/* A flaky test: fails (exit 1) about one run in five, when a random byte (getrandom, which
 * the trace records) is below 51. Prints the byte, so a replay shows the same draw. */
#include <stdio.h>
#include <sys/random.h>

int main(void) {
    unsigned char b = 0;
    if (getrandom(&b, 1, 0) != 1) {
        perror("getrandom");
        return 2;
    }
    int fail = b < 51;
    printf("flaky: drew %u, %s\n", b, fail ? "fails" : "passes");
    return fail;
}
