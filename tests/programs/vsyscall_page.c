/* Calls gettimeofday, time and getcpu through the legacy vsyscall page (when the kernel maps
 * it) and checks their answers against the ordinary calls. */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static int has_vsyscall(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  int found = 0;
  while (f && fgets(line, sizeof line, f)) {
    found |= strstr(line, "[vsyscall]") != NULL;
  }
  if (f) {
    fclose(f);
  }
  return found;
}

static long call_page(unsigned long addr, void *a, void *b) {
  long ret;
  __asm__ __volatile__("callq *%%rax" : "=a"(ret) : "a"(addr), "D"(a), "S"(b), "d"(0)
                       : "rcx", "r11", "cc", "memory");
  return ret;
}

int main(void) {
  if (!has_vsyscall()) {
    printf("no vsyscall page\n");
    return 0;
  }
  struct timeval tv = {0, 0}, now;
  long r = call_page(0xffffffffff600000UL, &tv, NULL);
  gettimeofday(&now, NULL);
  printf("gettimeofday: %ld, %s\n", r, tv.tv_sec > 0 && tv.tv_sec <= now.tv_sec ? "sane" : "wrong");
  time_t t = 0;
  long rt = call_page(0xffffffffff600400UL, &t, NULL);
  printf("time: %s\n", rt == (long)t && t > 0 && t <= time(NULL) ? "sane" : "wrong");
  unsigned cpu = 9999, node = 9999;
  r = call_page(0xffffffffff600800UL, &cpu, &node);
  printf("getcpu: %ld, %s\n", r, cpu < 4096 && node < 4096 ? "sane" : "wrong");
  return 0;
}
