/* Clock reads in a loop, the way a program timing itself reads the clock: clock_gettime
 * (realtime and monotonic), gettimeofday and time, all through glibc (normally the vDSO, which
 * deja turns into real syscalls so that they are recorded; with the fast path they are
 * buffered). Prints how many calls it made and a digest of every value it read, which differs
 * between native runs. argv[1]: iterations (default 2000). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? strtol(argv[1], NULL, 0) : 2000;
    unsigned long long digest = 0;
    long backwards = 0;
    struct timespec prev = {0, 0};
    for (long i = 0; i < n; i++) {
        struct timespec rt, mono;
        struct timeval tv;
        clock_gettime(CLOCK_REALTIME, &rt);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        gettimeofday(&tv, NULL);
        time_t t = time(NULL);
        if (mono.tv_sec < prev.tv_sec ||
            (mono.tv_sec == prev.tv_sec && mono.tv_nsec < prev.tv_nsec))
            backwards++;
        prev = mono;
        digest = digest * 31 + (unsigned long long)rt.tv_nsec;
        digest = digest * 31 + (unsigned long long)mono.tv_nsec;
        digest = digest * 31 + (unsigned long long)tv.tv_usec;
        digest = digest * 31 + (unsigned long long)t;
    }
    printf("fp_clocks: %ld calls, monotonic went backwards %ld times, digest %llu\n", 4 * n,
           backwards, digest);
    return 0;
}
