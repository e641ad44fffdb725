/* Maps 2 bytes of a 3-byte file: the whole page is mapped, so the third byte is readable. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
  char name[] = "tailXXXXXX";
  int fd = mkstemp(name);
  if (fd < 0 || write(fd, "abc", 3) != 3) {
    perror("file");
    return 1;
  }
  unlink(name);
  const char *p = mmap(NULL, 2, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  printf("mapped: %c%c, past the length: %c, past the file: %d\n", p[0], p[1], p[2], p[100]);
  return 0;
}
