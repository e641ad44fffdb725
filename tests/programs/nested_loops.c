/* Two threads computing in a nested loop built at -O0: both counters live in the stack frame,
 * and the inner loop's iterations never write the outer one's, so the memory words a
 * preempted thread writes just before its point (the inner counter, the accumulator) repeat
 * at every pass of the outer loop; only the outer counter, a stack word next to the inner
 * one, tells the point's pass from the others (rr's vfork_done). Prints each thread's result. */
#include <pthread.h>
#include <stdio.h>

#define OUTER 400000

static void *work(void *arg) {
    long res = (long)arg;
    for (int i = 1; i < OUTER; i++) {
        for (int j = 1; j < 100; j++) {
            res = (res / 3) + 14 * i;
            if (res /= res > 2) {
                res = 3;
            }
        }
    }
    return (void *)res;
}

int main(void) {
    pthread_t t[2];
    for (long k = 0; k < 2; k++) {
        pthread_create(&t[k], 0, work, (void *)k);
    }
    for (int k = 0; k < 2; k++) {
        void *r;
        pthread_join(t[k], &r);
        printf("thread %d: %ld\n", k, (long)r);
    }
    return 0;
}
