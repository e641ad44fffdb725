/* A thread and a child process, then one line, then everyone sleeps 30 s: the test kills the
 * recorder meanwhile, and the incomplete recording must replay up to its end and stop there
 * (ending a thread group whose leader waits for its thread, and a child). */
#include <pthread.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static void *sleeper(void *arg) {
    (void)arg;
    sleep(30);
    return NULL;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, sleeper, NULL);
    pid_t child = fork();
    if (child == 0) {
        sleep(30);
        _exit(0);
    }
    printf("slow_tree: started pid %d\n", (int)getpid());
    fflush(stdout);
    sleep(30);
    waitpid(child, NULL, 0);
    pthread_join(t, NULL);
    printf("slow_tree: done\n");
    return 0;
}
