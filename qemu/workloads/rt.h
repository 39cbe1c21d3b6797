/* gdbfault workload runtime: freestanding, static, Linux system calls, no libc.
 * Two ABIs from the same sources: i386 (`int $0x80`, the default) and
 * x86_64 (`syscall`, built when the compiler targets __x86_64__).
 *
 * i386 system calls used (Linux i386 numbering; every one exists from
 * Linux 2.0 to today, and only these are ever made):
 *     1 exit          4 write         20 getpid       43 times
 *    45 brk (wrapper only, unused)    67 sigaction (old struct)
 *    88 reboot (only when getpid() == 1)
 *    90 mmap (old: one pointer to 6 longs)        91 munmap
 *   119 sigreturn (from rt_restorer only)        125 mprotect
 * No mmap2, no rt_sigaction, no libc.
 *
 * x86_64 system calls used (Linux x86_64 numbering; x86_64 has no old
 * sigaction, no old mmap and no sigreturn):
 *     1 write         9 mmap (six register arguments)   10 mprotect
 *    11 munmap       12 brk (wrapper only, unused)
 *    13 rt_sigaction (SA_RESTORER, 8-byte sigset)
 *    15 rt_sigreturn (from rt_restorer only)   39 getpid   60 exit
 *   100 times       169 reboot (only when getpid() == 1)
 */
#ifndef GDBFAULT_RT_H
#define GDBFAULT_RT_H

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

#ifdef __x86_64__
typedef unsigned long size_t;

#define NR_write        1
#define NR_mmap         9
#define NR_mprotect    10
#define NR_munmap      11
#define NR_brk         12
#define NR_rt_sigaction 13
#define NR_rt_sigreturn 15
#define NR_getpid      39
#define NR_exit        60
#define NR_times      100
#define NR_reboot     169
#else
typedef unsigned int size_t;

#define NR_exit       1
#define NR_write      4
#define NR_getpid    20
#define NR_times     43
#define NR_brk       45
#define NR_sigaction 67
#define NR_reboot    88
#define NR_mmap      90
#define NR_munmap    91
#define NR_sigreturn 119
#define NR_mprotect 125
#endif

#define EFAULT 14
#define SIGUSR1 10
#define SIGSEGV 11

#define PROT_READ  1
#define PROT_WRITE 2
#define MAP_PRIVATE   0x02
#define MAP_ANONYMOUS 0x20
#define SA_RESTORER 0x04000000UL
#define PAGE_SIZE 4096UL

#define REBOOT_MAGIC1 0xfee1deadU
#define REBOOT_MAGIC2 672274793U
#define REBOOT_CMD_RESTART 0x01234567U

#ifdef __x86_64__
/* the kernel's struct sigaction for rt_sigaction, x86_64: handler, flags,
 * restorer, mask (one 64-bit word; sigsetsize 8).  Same field names as the
 * i386 old_sigaction, so the setup code is shared. */
struct k_sigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	unsigned long mask;
};

/* struct sigcontext, x86_64 (uc_mcontext of the rt signal frame's ucontext,
 * 40 bytes into it) */
struct sigcontext {
	unsigned long r8, r9, r10, r11, r12, r13, r14, r15;
	unsigned long rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags;
	unsigned short cs, gs, fs, ss;
	unsigned long err, trapno, oldmask, cr2;
	unsigned long fpstate, reserved1[8];
};
#define SC_IP(sc) ((sc)->rip)
#else
/* old_sigaction, i386: handler, mask, flags, restorer */
struct old_sigaction {
	void (*handler)(int);
	unsigned long mask;
	unsigned long flags;
	void (*restorer)(void);
};
#define k_sigaction old_sigaction

/* struct sigcontext, i386; the same layout since Linux 2.0 */
struct sigcontext {
	unsigned short gs, __gsh, fs, __fsh, es, __esh, ds, __dsh;
	unsigned long edi, esi, ebp, esp, ebx, edx, ecx, eax;
	unsigned long trapno, err, eip;
	unsigned short cs, __csh;
	unsigned long eflags, esp_at_signal;
	unsigned short ss, __ssh;
	unsigned long fpstate, oldmask, cr2;
};
#define SC_IP(sc) ((sc)->eip)
#endif

struct tms {
	long utime, stime, cutime, cstime;
};

#ifdef __x86_64__
/* raw system calls (`syscall`: number in rax, arguments in rdi, rsi, rdx,
 * r10, r8, r9; rcx and r11 are clobbered): return rax (-errno on failure) */
static inline long sys0(long n)
{ long r; __asm__ volatile("syscall" : "=a"(r) : "0"(n) : "rcx", "r11", "memory"); return r; }
static inline long sys1(long n, long a)
{ long r; __asm__ volatile("syscall" : "=a"(r) : "0"(n), "D"(a) : "rcx", "r11", "memory"); return r; }
static inline long sys2(long n, long a, long b)
{ long r; __asm__ volatile("syscall" : "=a"(r) : "0"(n), "D"(a), "S"(b) : "rcx", "r11", "memory"); return r; }
static inline long sys3(long n, long a, long b, long c)
{ long r; __asm__ volatile("syscall" : "=a"(r) : "0"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory"); return r; }
static inline long sys4(long n, long a, long b, long c, long d)
{
	long r;
	register long r10 __asm__("r10") = d;
	__asm__ volatile("syscall" : "=a"(r) : "0"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return r;
}
static inline long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	long r;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall" : "=a"(r) : "0"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return r;
}
#else
/* raw system calls: return the kernel's eax (-errno on failure) */
static inline long sys0(long n)
{ long r; __asm__ volatile("int $0x80" : "=a"(r) : "0"(n) : "memory"); return r; }
static inline long sys1(long n, long a)
{ long r; __asm__ volatile("int $0x80" : "=a"(r) : "0"(n), "b"(a) : "memory"); return r; }
static inline long sys2(long n, long a, long b)
{ long r; __asm__ volatile("int $0x80" : "=a"(r) : "0"(n), "b"(a), "c"(b) : "memory"); return r; }
static inline long sys3(long n, long a, long b, long c)
{ long r; __asm__ volatile("int $0x80" : "=a"(r) : "0"(n), "b"(a), "c"(b), "d"(c) : "memory"); return r; }

#endif

static inline __attribute__((noreturn)) void sys_exit(int code)
{ for (;;) sys1(NR_exit, code); }
static inline long sys_write(int fd, const void *buf, size_t len)
{ return sys3(NR_write, fd, (long)buf, (long)len); }
static inline long sys_getpid(void) { return sys0(NR_getpid); }
static inline long sys_times(struct tms *t) { return sys1(NR_times, (long)t); }
static inline long sys_brk(void *p) { return sys1(NR_brk, (long)p); }
/* i386: old sigaction (67); x86_64: rt_sigaction (13) with an 8-byte sigset */
#ifdef __x86_64__
static inline long sys_sigaction(int sig, const struct k_sigaction *act,
				 struct k_sigaction *oact)
{ return sys4(NR_rt_sigaction, sig, (long)act, (long)oact, 8); }
#else
static inline long sys_sigaction(int sig, const struct old_sigaction *act,
				 struct old_sigaction *oact)
{ return sys3(NR_sigaction, sig, (long)act, (long)oact); }
#endif
static inline long sys_reboot(u32 m1, u32 m2, u32 cmd)
{ return sys3(NR_reboot, (long)m1, (long)m2, (long)cmd); }
static inline long sys_munmap(void *p, size_t len)
{ return sys2(NR_munmap, (long)p, (long)len); }
static inline long sys_mprotect(void *p, size_t len, int prot)
{ return sys3(NR_mprotect, (long)p, (long)len, prot); }
long sys_mmap_anon(size_t len, int prot); /* private anonymous: i386 old mmap (90), x86_64 mmap (9) */

static inline int is_err(long r) { return (unsigned long)r >= (unsigned long)-4095; }

static inline u64 rdtsc(void)
{ u32 lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((u64)hi << 32) | lo; }

/* output */
void put_str(const char *s);                 /* to fd 1, whole string */
void put_buf(const char *s, size_t n);
char *fmt_u64(char *dst, u64 v);             /* returns end, no NUL */
void put_u64(u64 v);

/* one-line JSON builder into a fixed buffer */
struct json { char buf[768]; size_t len; int first; };
void json_begin(struct json *j, const char *prefix); /* "PREFIX {" */
void json_str(struct json *j, const char *key, const char *val);
void json_u64(struct json *j, const char *key, u64 val);
void json_bool(struct json *j, const char *key, int val);
void json_end_print(struct json *j);                  /* "}\n", write */

/* freestanding helpers gcc may call */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
size_t str_len(const char *s);

/* end of run: reboot(RESTART) only as pid 1 (init in the guest), else exit */
__attribute__((noreturn)) void rt_finish(int code);

/* the shared SIGSEGV handler (C side, called from rt_segv_entry) */
void rt_segv_handler(int sig, const struct sigcontext *sc);
void rt_segv_entry(int sig);
void rt_restorer(void);

#endif
