/* Print one line, then sleep 30 s: the test kills the recorder while this sleeps. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("slow: started pid %d\n", (int)getpid());
    fflush(stdout);
    sleep(30);
    printf("slow: done\n");
    return 0;
}
