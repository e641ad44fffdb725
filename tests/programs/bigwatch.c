/* Writes into a 4 KiB global, for watching an object larger than the debug registers cover. */
#include <stdio.h>

static char big[4096];

int main(void) {
    for (int i = 0; i < 3; i++)
        big[1000 + i] = (char)(i + 1);
    printf("%d\n", big[1001]);
    return 0;
}
