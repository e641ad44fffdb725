/* Writing memory without a store: process_vm_writev into the caller's own memory, and
 * pwrite to /proc/CHILD/mem, which a forked child then reads. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static char target[16] = "untouched";
static volatile int cookie;

static int check(const char *what, int ok) {
    printf("%s: %s\n", what, ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}

int main(void) {
    int bad = 0;
    char src[] = "vm_writev";
    struct iovec local = {src, sizeof src};
    struct iovec remote = {target, sizeof src};
    ssize_t n = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);
    bad |= check("process_vm_writev into itself", n == (ssize_t)sizeof src && !strcmp(target, "vm_writev"));
    int go[2];
    pipe(go);
    pid_t c = fork();
    if (c == 0) {
        char ch;
        read(go[0], &ch, 1);
        _exit(cookie == 0x1234 ? 0 : 1);
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", c);
    int mem = open(path, O_RDWR);
    int value = 0x1234;
    bad |= check("pwrite to /proc/CHILD/mem", pwrite(mem, &value, sizeof value, (uintptr_t)&cookie) == sizeof value);
    write(go[1], "x", 1);
    int status;
    waitpid(c, &status, 0);
    bad |= check("the child saw the write", WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return bad;
}
