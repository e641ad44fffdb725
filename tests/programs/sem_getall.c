/* A System V semaphore set read back whole with semctl(GETALL) after a forked child changed
 * it with semop: the replay must hand the program the recorded values. */
#include <stdio.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
  int id = semget(IPC_PRIVATE, 4, 0600);
  if (id < 0)
    return 2;
  unsigned short init[4] = {1, 2, 3, 4};
  if (semctl(id, 0, SETALL, init) != 0)
    return 3;
  pid_t child = fork();
  if (child == 0) {
    struct sembuf op = {.sem_num = 2, .sem_op = (short)(getpid() % 5 + 1), .sem_flg = 0};
    return semop(id, &op, 1) == 0 ? 0 : 1;
  }
  int status;
  waitpid(child, &status, 0);
  unsigned short now[4] = {0};
  int r = semctl(id, 0, GETALL, now);
  semctl(id, 0, IPC_RMID);
  printf("getall=%d values=%u %u %u %u child=%d\n", r, now[0], now[1], now[2], now[3],
         WEXITSTATUS(status));
  return r == 0 ? 0 : 1;
}
