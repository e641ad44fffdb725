/* A small program for strace to trace inside a recording (compat_ptrace.rs): a pipe, a
 * forked child that writes into it and exits with 3, a thread, and the parent reporting
 * what it saw. Its syscalls are ones strace decodes (pipe2, write, read, wait4, ...). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *thread_main(void *arg) {
    (void)arg;
    return (void *)(long)getpid();
}

int main(void) {
    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        const char msg[] = "hello from the child";
        close(fds[0]);
        if (write(fds[1], msg, sizeof msg) != (ssize_t)sizeof msg)
            _exit(1);
        _exit(3);
    }
    close(fds[1]);
    char buf[64] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    int status = 0;
    if (waitpid(child, &status, 0) != child) {
        perror("waitpid");
        return 1;
    }
    pthread_t th;
    void *ret = NULL;
    if (pthread_create(&th, NULL, thread_main, NULL) != 0 || pthread_join(th, &ret) != 0) {
        fprintf(stderr, "thread failed\n");
        return 1;
    }
    printf("parent: read %zd bytes: %s\n", n, buf);
    printf("parent: child exited with %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    printf("parent: thread saw its own process: %s\n",
           (long)ret == (long)getpid() ? "yes" : "no");
    return 0;
}
