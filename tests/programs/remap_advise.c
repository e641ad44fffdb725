/* mremap growing a private file mapping (the new page comes from the file) and moving an
 * anonymous one; madvise(MADV_DONTNEED) on a private file mapping (the file's bytes come back),
 * private anonymous memory (zeros) and shared anonymous memory (kept). argv[1]: scratch file. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

static int check(const char *what, int ok) {
    printf("%s: %s\n", what, ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: remap_advise FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    char buf[2 * PAGE];
    for (int i = 0; i < 2 * PAGE; i++)
        buf[i] = (char)(i * 7);
    if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) {
        perror("write");
        return 1;
    }
    int bad = 0;
    char *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    p = mremap(p, PAGE, 2 * PAGE, MREMAP_MAYMOVE);
    bad |= check("a grown file mapping reads the file", p != MAP_FAILED && !memcmp(p, buf, sizeof buf));
    memset(p, 0, 2 * PAGE);
    madvise(p, 2 * PAGE, MADV_DONTNEED);
    bad |= check("DONTNEED on a private file mapping rereads the file", !memcmp(p, buf, sizeof buf));

    /* Two pages, the second made read-only: a different mapping right after the first page
     * makes growing it in place impossible, so mremap must move it. */
    char *a = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(a, 'q', PAGE);
    int walled = mprotect(a + PAGE, PAGE, PROT_READ) == 0;
    char *moved = mremap(a, PAGE, 4 * PAGE, MREMAP_MAYMOVE);
    bad |= check("a moved anonymous mapping keeps its bytes",
                 walled && moved != MAP_FAILED && moved != a && moved[PAGE - 1] == 'q' &&
                     moved[3 * PAGE] == 0);
    madvise(moved, PAGE, MADV_DONTNEED);
    bad |= check("DONTNEED on private anonymous memory zeroes it", moved[0] == 0);

    char *s = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(s, 's', PAGE);
    madvise(s, PAGE, MADV_DONTNEED);
    bad |= check("DONTNEED on shared anonymous memory keeps it", s[10] == 's');
    char *grown = mremap(s, PAGE, 3 * PAGE, MREMAP_MAYMOVE);
    /* (Its new pages lie past the end of the shared memory object: touching them is SIGBUS.) */
    bad |= check("a grown shared anonymous mapping", grown != MAP_FAILED && grown[PAGE - 1] == 's');
    printf("moved by %ld pages\n", (long)(moved - a) / PAGE);
    return bad;
}
