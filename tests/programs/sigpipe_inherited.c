/* Leaves SIGPIPE as it inherited it, prints that disposition, then writes to a pipe whose
 * reader is closed: with the default disposition it dies by SIGPIPE (status 141). */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

int main(void) {
  struct sigaction sa;
  sigaction(SIGPIPE, NULL, &sa);
  printf("SIGPIPE %s\n", sa.sa_handler == SIG_IGN ? "ignored" : "default");
  fflush(stdout);
  int p[2];
  if (pipe(p) != 0) {
    return 1;
  }
  close(p[0]);
  write(p[1], "x", 1);
  printf("the write returned\n");
  return 0;
}
