/* Syscall-heavy benchmark: reads.c N does N one-byte read()s from /dev/zero. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? strtol(argv[1], NULL, 0) : 100000;
    int fd = open("/dev/zero", O_RDONLY);
    if (fd < 0) { perror("/dev/zero"); return 1; }
    long ok = 0, sum = 0;
    for (long i = 0; i < n; i++) {
        char c = 1;
        if (read(fd, &c, 1) == 1) ok++;
        sum += c;
    }
    printf("reads %ld ok %ld sum %ld\n", n, ok, sum);
    close(fd);
    return 0;
}
