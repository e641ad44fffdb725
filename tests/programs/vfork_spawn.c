/* vfork and posix_spawn. Five children, each waited for and its status printed:
 *
 *   1. vfork() then execve("/bin/echo") writing to our stdout;
 *   2. vfork() then execve("/bin/true");
 *   3. vfork() then _exit(5) without exec (the parent resumes when the child exits);
 *   4. posix_spawn("/bin/echo") with its stdout redirected into a pipe (a file action), whose
 *      output the parent reads and prints;
 *   5. posix_spawnp("true") found through PATH.
 *
 * glibc implements posix_spawn with clone(CLONE_VM | CLONE_VFORK), so both paths share the
 * parent's memory until the child execs or exits. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void report(const char *what, pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) {
        perror("waitpid");
        return;
    }
    printf("%s: exited %d status %d\n", what, WIFEXITED(st), WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    fflush(stdout);
}

static pid_t vfork_exec(char *const argv[]) {
    fflush(stdout);
    pid_t pid = vfork();
    if (pid == 0) {
        execve(argv[0], argv, environ);
        _exit(127);
    }
    return pid;
}

int main(void) {
    char *echo_argv[] = {"/bin/echo", "hello from vfork + execve of /bin/echo", NULL};
    report("vfork echo", vfork_exec(echo_argv));

    char *true_argv[] = {"/bin/true", NULL};
    report("vfork true", vfork_exec(true_argv));

    fflush(stdout);
    pid_t pid = vfork();
    if (pid == 0) _exit(5);
    report("vfork _exit(5)", pid);

    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        perror("pipe2");
        return 1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    char *spawn_argv[] = {"/bin/echo", "hello from posix_spawn through a pipe", NULL};
    int err = posix_spawn(&pid, spawn_argv[0], &fa, NULL, spawn_argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err) {
        printf("posix_spawn failed: %s\n", strerror(err));
        return 1;
    }
    close(p[1]);
    char buf[256];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(p[0], buf + len, sizeof buf - 1 - len)) > 0) len += r;
    buf[len] = 0;
    close(p[0]);
    printf("posix_spawn child wrote: %s", buf);
    report("posix_spawn echo", pid);

    char *true_p_argv[] = {"true", NULL};
    err = posix_spawnp(&pid, "true", NULL, NULL, true_p_argv, environ);
    if (err) {
        printf("posix_spawnp failed: %s\n", strerror(err));
        return 1;
    }
    report("posix_spawnp true", pid);
    return 0;
}
