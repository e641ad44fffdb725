/* A file mapped MAP_SHARED twice, changed by pwrite, write, pwritev, a store through the other
 * mapping, ftruncate and a punched hole: every mapping sees every change. A private mapping
 * past the end of the file raises SIGBUS there. argv[1]: a scratch file (created). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#define PAGE 4096
static sigjmp_buf env;

static void on_bus(int sig) { siglongjmp(env, sig); }

static int check(const char *what, int ok) {
    printf("%s: %s\n", what, ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: shared_file_write FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    char page[PAGE];
    memset(page, 'a', PAGE);
    for (int i = 0; i < 3; i++)
        if (write(fd, page, PAGE) != PAGE) {
            perror("write");
            return 1;
        }
    char *ro = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
    char *rw = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ro == MAP_FAILED || rw == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    int bad = 0;
    pwrite(fd, "hello", 5, 100);
    bad |= check("pwrite shows in both mappings",
                 !memcmp(ro + 100, "hello", 5) && !memcmp(rw + 100, "hello", 5));
    rw[200] = 'Z';
    bad |= check("a store shows in the other mapping", ro[200] == 'Z');
    lseek(fd, PAGE + 10, SEEK_SET);
    write(fd, "world", 5);
    bad |= check("write at the file offset", !memcmp(rw + PAGE + 10, "world", 5));
    struct iovec iov[2] = {{"ab", 2}, {"cd", 2}};
    pwritev(fd, iov, 2, 2 * PAGE + 1);
    bad |= check("pwritev", !memcmp(rw + 2 * PAGE + 1, "abcd", 4));
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, PAGE, PAGE);
    bad |= check("a punched hole reads zeros", rw[PAGE + 10] == 0 && rw[2 * PAGE + 1] == 'a');
    ftruncate(fd, 3 * PAGE + 100);
    char *past = mmap(NULL, 5 * PAGE, PROT_READ, MAP_PRIVATE, fd, 0);
    signal(SIGBUS, on_bus);
    int sig = sigsetjmp(env, 1);
    if (sig == 0) {
        volatile char c = past[4 * PAGE];
        printf("read %d past the end: no SIGBUS\n", c);
        bad = 1;
    } else {
        printf("signal %d past the end of the file\n", sig);
    }
    bad |= check("the grown page is zero past the old end", past[3 * PAGE + 50] == 0);
    /* A private mapping keeps the pages it wrote when the file is mapped again. */
    char *priv = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    priv[0] = 'P';
    pwrite(fd, "new", 3, PAGE);
    char *again = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, fd, 0);
    bad |= check("a private copy survives another mapping of its file",
                 priv[0] == 'P' && again[0] == 'a' && !memcmp(priv + PAGE, "new", 3));
    unsigned sum = 0;
    for (int i = 0; i < 3 * PAGE; i++)
        sum = sum * 31 + (unsigned char)rw[i];
    printf("checksum %08x\n", sum);
    return bad;
}
