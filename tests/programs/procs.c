/* A process tree for debugging processes: a forked child that never execs (child_work), a
 * vforked child that execs, and a forked child that execs this program again ("again"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int child_work(int n) {
    int local = n * 7;
    printf("child works: %d\n", local);
    fflush(stdout);
    return local;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "again") == 0) {
        printf("exec'd again\n");
        return 0;
    }
    pid_t child = fork();
    if (child == 0) {
        child_work(6);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    pid_t again = fork();
    if (again == 0) {
        execl(argv[0], argv[0], "again", (char *)NULL);
        _exit(127);
    }
    waitpid(again, NULL, 0);
    pid_t spawned = vfork();
    if (spawned == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    waitpid(spawned, NULL, 0);
    printf("parent done\n");
    return 0;
}
