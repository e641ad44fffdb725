/* Memory shared between forked processes: an anonymous MAP_SHARED page and a writable
 * MAP_SHARED mapping of a file (argv[1], created here), both incremented by three children in
 * turns that depend on scheduling, then read by the parent. Inside the recorded tree the sums
 * replay exactly; the file mapping could also be changed from outside the recording, so deja
 * warns naming the file. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: shared_memory FILE\n");
        return 2;
    }
    int *anon = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (anon == MAP_FAILED || fd < 0 || ftruncate(fd, 4096) != 0) {
        perror("setup");
        return 1;
    }
    int *file = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (file == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (int k = 1; k <= 3; k++) {
        if (fork() == 0) {
            for (int i = 0; i < 1000; i++) {
                __atomic_fetch_add(anon, 1, __ATOMIC_SEQ_CST);
                __atomic_fetch_add(file, k, __ATOMIC_SEQ_CST);
                /* The last writer's id: which child wrote last depends on scheduling. */
                file[1] = k;
                if (i % 250 == 0)
                    usleep(100);
            }
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {
    }
    printf("anon %d file %d last %d\n", anon[0], file[0], file[1]);
    return 0;
}
