/* Exit with status 3 (deja rec must exit 3 too). */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    printf("exiting with 3\n");
    fflush(stdout);
    exit(3);
}
