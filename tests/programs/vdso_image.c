/* Reads the vDSO's ELF header through AT_SYSINFO_EHDR and uses the clock functions glibc
 * takes from it. */
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/time.h>
#include <time.h>

int main(void) {
  const unsigned char *vdso = (const unsigned char *)getauxval(AT_SYSINFO_EHDR);
  printf("vdso: %s\n", vdso && !memcmp(vdso, "\177ELF\2", 5) ? "an ELF64 image" : "missing");
  struct timespec a, b;
  int r1 = clock_gettime(CLOCK_MONOTONIC, &a);
  int r2 = clock_gettime(CLOCK_MONOTONIC, &b);
  int ordered = b.tv_sec > a.tv_sec || (b.tv_sec == a.tv_sec && b.tv_nsec >= a.tv_nsec);
  struct timeval tv;
  int r3 = gettimeofday(&tv, NULL);
  time_t t = time(NULL);
  printf("clock_gettime: %d %d %s, gettimeofday: %d, time: %s\n", r1, r2,
         ordered ? "ordered" : "backwards", r3, t >= tv.tv_sec ? "sane" : "wrong");
  return 0;
}
