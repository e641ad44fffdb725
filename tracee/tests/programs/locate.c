/* Freestanding test program for the locator: no libc, so two runs of it have identical memory
 * (no stack canary, no pointer guard); the AT_RANDOM bytes are zeroed for the same reason. */
typedef unsigned long u64;

static long sys1(long n, long a) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a) : "rcx", "r11", "memory");
    return r;
}

volatile u64 counter;
volatile u64 stop_flag;
u64 sink;

void guard_loop(void);
void spin_loop(void);
void tight_loop(void);
void pun_loop(void);

static void scrub_at_random(u64 *sp) {
    u64 *p = sp + 1 + sp[0] + 1; /* argc, argv..., NULL */
    while (*p) p++;              /* envp */
    for (p++; p[0]; p += 2)
        if (p[0] == 25) { ((volatile u64 *)p[1])[0] = 0; ((volatile u64 *)p[1])[1] = 0; }
}

void cmain(u64 *sp) {
    char mode = ((char **)(sp + 1))[1][0];
    scrub_at_random(sp);
    sys1(110, 0); /* getppid: the "event" before the point */
    switch (mode) {
    case 'r': { /* progress in registers and memory */
        u64 x = 1;
        for (u64 i = 0;; i++) { counter++; x = x * 3 + i; __asm__ volatile("" : "+r"(x)); }
    }
    case 'm': /* progress only in memory */
        while (!stop_flag) counter++;
        break;
    case 'b': { /* bounded, then exit */
        for (u64 i = 0; i < 200000000UL; i++) { counter++; __asm__ volatile("" : "+r"(i)); }
        break;
    }
    case 'g':
        guard_loop();
    case 's':
        spin_loop();
    case 't':
        tight_loop();
        break;
    case 'p':
        pun_loop();
    }
    sys1(231, 0);
}

/* guard_loop: the point's instruction (inc, 3 bytes) is followed by a branch target that the
 * first passes jump to directly: those land inside the bytes a trampoline patch covers. */
__asm__(
    ".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call cmain\n hlt\n"
    ".globl guard_loop\nguard_loop:\n"
    " xor %eax, %eax\n mov $5, %edx\n"
    ".globl guard_point\nguard_point:\n inc %rax\n"
    ".globl guard_target\nguard_target:\n addq $1, counter(%rip)\n dec %edx\n jg guard_target\n"
    " jmp guard_point\n"
    ".globl spin_loop\nspin_loop:\n"
    ".globl spin_point\nspin_point:\n mov stop_flag(%rip), %rax\n test %rax, %rax\n jz spin_point\n ret\n"
    /* tight_loop: the branch back to the point is one of the instructions a patch covers. */
    ".globl tight_loop\ntight_loop:\n mov $200000, %ecx\n xor %eax, %eax\n"
    ".globl tight_point\ntight_point:\n inc %rax\n loop tight_point\n ret\n"
    /* pun_loop: a 4-byte instruction at the point, then a branch target at its end that the
     * loop enters by most of the time: a punned jump leaves that target in place. */
    ".globl pun_loop\npun_loop:\n xor %eax, %eax\n"
    ".globl pun_enter\npun_enter:\n jmp pun_target\n"
    ".globl pun_point\npun_point:\n add $1, %rax\n"
    ".globl pun_target\npun_target:\n addq $1, counter(%rip)\n testb $3, counter(%rip)\n"
    " jnz pun_enter\n jmp pun_point\n");
