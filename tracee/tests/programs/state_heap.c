/* A C-library program for measuring memory_digest: `argv[1]` MiB of heap holding a non-zero
 * pattern, as much again holding zeros (resident), two threads with default (8 MiB) stacks of
 * which they touch 256 KiB; then the main thread stops itself with SIGSTOP. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_barrier_t barrier;

static void *worker(void *arg)
{
    volatile char buf[256 * 1024];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)((long)arg + i);
    pthread_barrier_wait(&barrier);
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv)
{
    size_t bytes = (size_t)(argc > 1 ? atol(argv[1]) : 4) << 20;
    volatile char *pattern = malloc(bytes);
    volatile char *zeros = malloc(bytes);
    if (!pattern || !zeros)
        return 1;
    for (size_t i = 0; i < bytes; i++) {
        pattern[i] = (char)(i * 7 + 1);
        zeros[i] = 0;
    }
    pthread_t t[2];
    pthread_barrier_init(&barrier, NULL, 3);
    for (long i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)(i + 1)) != 0)
            return 2;
    pthread_barrier_wait(&barrier);
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGSTOP);
    return 0;
}
