/* System V shared memory: a segment attached twice (the attachments alias), written by a
 * forked child, checked with IPC_STAT, detached and removed. */
#include <stdio.h>
#include <string.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

static int check(const char *what, int ok) {
    printf("%s: %s\n", what, ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}

int main(void) {
    int bad = 0;
    size_t size = 3 * 4096 - 100;
    int id = shmget(IPC_PRIVATE, size, 0600);
    if (id < 0) {
        perror("shmget");
        return 1;
    }
    char *a = shmat(id, NULL, 0);
    char *b = shmat(id, NULL, SHM_RDONLY);
    if (a == (char *)-1 || b == (char *)-1) {
        perror("shmat");
        return 1;
    }
    bad |= check("a new segment is zero", a[size - 1] == 0);
    strcpy(a, "parent");
    bad |= check("the attachments alias", !strcmp(b, "parent"));
    pid_t c = fork();
    if (c == 0) {
        strcpy(a + 100, "child");
        _exit(0);
    }
    int status;
    waitpid(c, &status, 0);
    bad |= check("a child's store", !strcmp(b + 100, "child"));
    struct shmid_ds ds;
    shmctl(id, IPC_STAT, &ds);
    bad |= check("IPC_STAT", ds.shm_segsz == size && ds.shm_nattch == 2);
    bad |= check("shmdt", shmdt(a) == 0 && shmdt(b) == 0);
    char *again = shmat(id, NULL, 0);
    bad |= check("attached again, the bytes stay", !strcmp(again, "parent") && !strcmp(again + 100, "child"));
    shmdt(again);
    shmctl(id, IPC_RMID, NULL);
    return bad;
}
