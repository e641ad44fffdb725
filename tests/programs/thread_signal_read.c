/* A signal sent from one thread to another that is blocked in read() on a pipe.
 *
 * argv[1] is "restart" (the SIGUSR1 handler is installed with SA_RESTART: the read resumes after
 * the handler and returns the byte written later) or "norestart" (no SA_RESTART: the read fails
 * with EINTR, and a second read returns the byte).
 *
 * The reader thread announces itself, then reads; the main thread waits until the reader sleeps
 * in the kernel (its /proc/self/task/TID/stat state is S), sends pthread_kill(SIGUSR1), waits
 * until the handler ran, and only then writes one byte into the pipe. So the output is the same
 * in every run; it says which thread ran the handler (by index, not tid). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static __thread int thread_index; /* 0: main, 1: reader */
static volatile sig_atomic_t handler_calls, handler_thread = -1;
static volatile int reader_tid, reader_ready;
static int p[2];

static void on_usr1(int sig) {
    (void)sig;
    handler_thread = thread_index;
    handler_calls++;
}

static void sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* The scheduler state letter of a thread of ours, or '?'. */
static char task_state(int tid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    FILE *f = fopen(path, "r");
    if (!f) return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' ? close_paren[2] : '?';
}

static void *reader(void *arg) {
    (void)arg;
    thread_index = 1;
    reader_tid = (int)syscall(SYS_gettid);
    __atomic_store_n(&reader_ready, 1, __ATOMIC_SEQ_CST);
    char c = 0;
    ssize_t n = read(p[0], &c, 1);
    int e = errno;
    if (n == 1)
        printf("reader: first read returned 1 byte '%c'\n", c);
    else
        printf("reader: first read returned %zd errno %s\n", n, e == EINTR ? "EINTR" : strerror(e));
    if (n != 1) {
        n = read(p[0], &c, 1);
        printf("reader: second read returned %zd byte '%c'\n", n, n == 1 ? c : '?');
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    int restart = !strcmp(mode, "restart");
    if (!restart && strcmp(mode, "norestart")) {
        fprintf(stderr, "usage: thread_signal_read restart|norestart\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    if (pipe(p) < 0) {
        perror("pipe");
        return 1;
    }

    pthread_t t;
    pthread_create(&t, NULL, reader, NULL);
    while (!__atomic_load_n(&reader_ready, __ATOMIC_SEQ_CST)) sleep_ms(1);
    int waited = 0;
    while (task_state(reader_tid) != 'S' && waited < 5000) {
        sleep_ms(1);
        waited++;
    }
    char state = task_state(reader_tid);
    sleep_ms(10);
    pthread_kill(t, SIGUSR1);
    while (!handler_calls) sleep_ms(1);
    sleep_ms(10);
    if (write(p[1], "x", 1) != 1) perror("write");
    pthread_join(t, NULL);
    printf("mode %s: reader was in state %c when signalled; handler ran %d time(s), in thread %d\n",
           mode, state, (int)handler_calls, (int)handler_thread);
    return 0;
}
