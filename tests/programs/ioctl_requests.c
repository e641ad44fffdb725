/* ioctl requests the recorder models from the memory they point to, and an unknown request
 * with a legacy number (no _IOC encoding) that the recorder refuses. Prints what each
 * returned and wrote. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void) {
  int p[2];
  if (pipe(p) != 0 || write(p[1], "hello", 5) != 5) {
    perror("pipe");
    return 1;
  }
  int avail = -1;
  int r = ioctl(p[0], FIONREAD, &avail);
  printf("FIONREAD: %d, %d bytes\n", r, avail);

  /* FS_IOC_FIEMAP writes its struct and fm_extent_count extents after it. */
  char name[] = "fiemapXXXXXX";
  int fd = mkstemp(name);
  if (fd < 0) {
    perror("mkstemp");
    return 1;
  }
  unlink(name);
  char block[8192];
  memset(block, 'x', sizeof block);
  if (write(fd, block, sizeof block) != (ssize_t)sizeof block || fsync(fd) != 0) {
    perror("write");
    return 1;
  }
  size_t size = sizeof(struct fiemap) + 4 * sizeof(struct fiemap_extent);
  struct fiemap *fm = calloc(1, size);
  fm->fm_length = ~0ULL;
  fm->fm_flags = FIEMAP_FLAG_SYNC;
  fm->fm_extent_count = 4;
  r = ioctl(fd, FS_IOC_FIEMAP, fm);
  unsigned long long sum = 0;
  for (unsigned i = 0; r == 0 && i < fm->fm_mapped_extents && i < 4; i++) {
    sum += fm->fm_extents[i].fe_length + fm->fm_extents[i].fe_flags;
  }
  printf("FS_IOC_FIEMAP: %s, %u extents, checksum %llu\n", r == 0 ? "ok" : strerror(errno),
         r == 0 ? fm->fm_mapped_extents : 0, sum);

  /* 0x56ff: a console ("V") request number without _IOC encoding that nothing defines. */
  int out = 12345;
  errno = 0;
  r = ioctl(p[0], 0x56ff, &out);
  printf("0x56ff: %d (%s), out %d\n", r, strerror(errno), out);
  return 0;
}
