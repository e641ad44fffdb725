// hide_libs FILE PATH... -- CMD ARG...: in a private mount namespace (a user namespace too
// when not root), bind-mounts FILE over each PATH, then runs CMD. Built -static, so that it
// needs none of the files it hides. Exits 77 when the kernel allows no mount namespace.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    int ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    close(fd);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: hide_libs FILE PATH... -- CMD ARG...\n");
        return 2;
    }
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (uid == 0) {
        if (unshare(CLONE_NEWNS) != 0) {
            fprintf(stderr, "hide_libs: unshare(CLONE_NEWNS): %s\n", strerror(errno));
            return 77;
        }
    } else {
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
            fprintf(stderr, "hide_libs: unshare(CLONE_NEWUSER|CLONE_NEWNS): %s\n", strerror(errno));
            return 77;
        }
        char map[64];
        snprintf(map, sizeof map, "%u %u 1\n", uid, uid);
        write_file("/proc/self/setgroups", "deny");
        if (write_file("/proc/self/uid_map", map) != 0) return 77;
        snprintf(map, sizeof map, "%u %u 1\n", gid, gid);
        if (write_file("/proc/self/gid_map", map) != 0) return 77;
    }
    if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        fprintf(stderr, "hide_libs: making mounts private: %s\n", strerror(errno));
        return 77;
    }
    int i = 2;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (mount(argv[1], argv[i], NULL, MS_BIND, NULL) != 0) {
            fprintf(stderr, "hide_libs: bind-mounting %s over %s: %s\n", argv[1], argv[i],
                    strerror(errno));
            return 77;
        }
    }
    if (i + 1 >= argc) return 2;
    execv(argv[i + 1], argv + i + 1);
    fprintf(stderr, "hide_libs: exec %s: %s\n", argv[i + 1], strerror(errno));
    return 126;
}
