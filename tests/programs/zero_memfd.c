/* /dev/zero mapped private and shared (a forked child's stores reach its parent), and a memfd
 * written, mapped shared, changed by a child through the mapping and by write(2) after. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096

static int check(const char *what, int ok) {
    printf("%s: %s\n", what, ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}

int main(void) {
    int bad = 0;
    int z = open("/dev/zero", O_RDWR);
    char *priv = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, z, 0);
    char *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, z, 0);
    if (priv == MAP_FAILED || shared == MAP_FAILED) {
        perror("mmap /dev/zero");
        return 1;
    }
    bad |= check("private /dev/zero reads zeros", priv[PAGE + 5] == 0);
    priv[7] = 1;
    pid_t c = fork();
    if (c == 0) {
        shared[0] = 42;
        _exit(priv[7] == 1 ? 0 : 1);
    }
    int status;
    waitpid(c, &status, 0);
    bad |= check("a child's store to shared /dev/zero", shared[0] == 42 && status == 0);

    int m = memfd_create("deja-test", 0);
    write(m, "memfd data", 10);
    ftruncate(m, 2 * PAGE);
    char *mm = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
    bad |= check("the memfd's bytes", mm != MAP_FAILED && !memcmp(mm, "memfd data", 10));
    c = fork();
    if (c == 0) {
        memcpy(mm + PAGE, "from child", 10);
        _exit(0);
    }
    waitpid(c, &status, 0);
    char back[10];
    pread(m, back, 10, PAGE);
    bad |= check("a child's store reaches the memfd", !memcmp(back, "from child", 10));
    pwrite(m, "written", 7, 3);
    bad |= check("a write reaches the mapping", !memcmp(mm, "memwritten", 10));
    printf("%.10s / %.10s\n", mm, mm + PAGE);
    return bad;
}
