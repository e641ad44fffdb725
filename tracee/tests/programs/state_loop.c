/* A deterministic program without the C library (whose thread block holds the task id, which
 * differs between runs): fills some memory, makes one marker syscall (getppid) that passes the
 * addresses of its globals, then calls bump() forever.
 * Built with -O1 -nostdlib -static -fno-stack-protector. */

#define SYS_getppid 110

volatile unsigned long counter;
unsigned long flags_image;
unsigned char big[1 << 20] __attribute__((aligned(4096)));
unsigned char data[8192] = {1, 2, 3};

static long sys3(long n, long a, long b, long c)
{
    long r;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return r;
}

/* A call (stack write), a pushf (whose image must not show the stepping's trap flag) and a
 * counter increment (global write). */
__attribute__((noinline)) void bump(void)
{
    unsigned long f;
    __asm__ volatile("pushfq; popq %0" : "=r"(f));
    flags_image = f;
    counter++;
}

__attribute__((force_align_arg_pointer, noreturn)) void _start(void)
{
    for (int i = 0; i < 4096; i++)
        big[(i * 131) % 524288] = (unsigned char)(i | 1);
    data[100] = 7;
    sys3(SYS_getppid, (long)&counter, (long)big, (long)&flags_image);
    for (;;)
        bump();
}
