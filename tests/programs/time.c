/* Every way a program reads the clock: clock_gettime and gettimeofday and time() through the
 * vDSO (glibc's default), and clock_gettime as a real system call. All values differ per run. */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    struct timespec rt, mono, boot, cpu, raw;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_BOOTTIME, &boot);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    printf("vdso realtime  %lld.%09ld\n", (long long)rt.tv_sec, rt.tv_nsec);
    printf("vdso monotonic %lld.%09ld\n", (long long)mono.tv_sec, mono.tv_nsec);
    printf("boottime       %lld.%09ld\n", (long long)boot.tv_sec, boot.tv_nsec);
    printf("process cpu    %lld.%09ld\n", (long long)cpu.tv_sec, cpu.tv_nsec);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    printf("gettimeofday   %lld.%06ld\n", (long long)tv.tv_sec, (long)tv.tv_usec);

    time_t t1 = time(NULL), t2;
    time(&t2);
    printf("time           %lld %lld\n", (long long)t1, (long long)t2);

    long r = syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &raw);
    printf("raw syscall    %ld %lld.%09ld\n", r, (long long)raw.tv_sec, raw.tv_nsec);
    r = syscall(SYS_gettimeofday, &tv, NULL);
    printf("raw gtod       %ld %lld.%06ld\n", r, (long long)tv.tv_sec, (long)tv.tv_usec);
    r = syscall(SYS_time, NULL);
    printf("raw time       %ld\n", r);

    /* A loop of clock reads, as a program timing itself would do. */
    unsigned long long acc = 0;
    for (int i = 0; i < 1000; i++) {
        clock_gettime(CLOCK_MONOTONIC, &mono);
        acc = acc * 31 + (unsigned long long)mono.tv_nsec;
    }
    printf("loop digest    %llu\n", acc);
    fflush(stdout);
    /* Something on stderr too, so the replay's stderr echo is checked. */
    fprintf(stderr, "time: stderr line %ld\n", rt.tv_nsec);
    return 0;
}
