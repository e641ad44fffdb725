/* Kernel randomness: getrandom(2) (glibc wrapper and raw syscall) and /dev/urandom. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

static void hex(const char *label, const unsigned char *b, long n) {
    printf("%s", label);
    for (long i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\n");
}

int main(void) {
    unsigned char buf[64];
    ssize_t n = getrandom(buf, 32, 0);
    printf("getrandom returned %zd\n", n);
    hex("getrandom ", buf, n > 0 ? n : 0);
    n = syscall(SYS_getrandom, buf, 16, GRND_NONBLOCK);
    hex("raw getrandom ", buf, n > 0 ? n : 0);

    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) { perror("open /dev/urandom"); return 1; }
    n = read(fd, buf, sizeof buf);
    printf("urandom read %zd\n", n);
    hex("urandom ", buf, n > 0 ? n : 0);
    close(fd);

    /* Seeded libc PRNG, as programs commonly do. */
    unsigned seed;
    getrandom(&seed, sizeof seed, 0);
    srandom(seed);
    printf("random() %ld %ld %ld\n", random(), random(), random());
    return 0;
}
