/* Print a nondeterministic line, then abort(): the process dies of SIGABRT (status 134). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    printf("about to abort at %ld.%09ld\n", (long)ts.tv_sec, ts.tv_nsec);
    fflush(stdout);
    fprintf(stderr, "abort: stderr before abort\n");
    abort();
}
