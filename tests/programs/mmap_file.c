/* mmap the file named by argv[1] and print its contents and a hash. The test changes and then
 * deletes the file after recording: replay must still print the original contents. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: mmap_file FILE\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 1; }
    struct stat st;
    if (fstat(fd, &st) < 0) { perror("fstat"); return 1; }
    printf("size %lld\n", (long long)st.st_size);
    if (st.st_size == 0) { printf("empty\n"); return 0; }
    const unsigned char *p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    close(fd); /* the mapping outlives the descriptor */
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (off_t i = 0; i < st.st_size; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    printf("fnv1a %016llx\n", (unsigned long long)h);
    printf("contents:\n");
    fflush(stdout);
    fwrite(p, 1, st.st_size, stdout);
    printf("\nend\n");
    munmap((void *)p, st.st_size);
    return 0;
}
