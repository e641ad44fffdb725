/* Built with -static by tests/fast_path.rs: a binary with its own copy of glibc's syscall sites
 * (no shared libc for the fast path to patch) making buffered calls: one-byte reads of
 * /dev/zero, getpid and clock_gettime. Prints the counts and a clock digest. */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    int z = open("/dev/zero", O_RDONLY);
    if (z < 0) {
        perror("/dev/zero");
        return 1;
    }
    long ok = 0;
    unsigned long digest = 0;
    for (int i = 0; i < 2000; i++) {
        char c = 1;
        struct timespec ts;
        if (read(z, &c, 1) == 1 && c == 0) ok++;
        if (getpid() > 0) ok++;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        digest = digest * 31 + (unsigned long)ts.tv_nsec;
    }
    printf("fp_static: %ld ok, digest %lu\n", ok, digest);
    return 0;
}
