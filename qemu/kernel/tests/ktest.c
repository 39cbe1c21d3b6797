/*
 * ktest.c - a self-test init for the lab kernel: exercises the paths the
 * gdbfault workloads do not (module exception tables, the on-stack signal
 * trampoline, SA_ONESHOT, signal masks, stack growth, brk, vm area
 * splitting, strncpy_from_user, -ENOSYS).  Freestanding, static i386.
 *
 * Prints "KTEST ok <name>" or "KTEST FAIL <name> ..." per check and then
 * "KTEST-RESULT pass=P fail=F", and reboots.  With the argument "segv" it
 * instead dies of an unhandled SIGSEGV, with "badframe" of a forged
 * sigreturn frame (both: QEMU exit status 3).
 */
typedef unsigned long ul;

#define EFAULT 14
#define ENOENT 2
#define ENOSYS 38
#define SIGUSR1 10
#define SIGSEGV 11
#define SIGUSR2 12
#define SA_RESTORER 0x04000000UL
#define SA_ONESHOT 0x80000000UL

static long sc3_(long n, long a, long b, long c)
{
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "0"(n), "b"(a), "c"(b), "d"(c) : "memory");
	return r;
}
#define sc3(n, a, b, c) sc3_(n, (long)(a), (long)(b), (long)(c))
#define sc0(n) sc3(n, 0, 0, 0)
#define sc1(n, a) sc3(n, (long)(a), 0, 0)
#define sc2(n, a, b) sc3(n, (long)(a), (long)(b), 0)

__asm__(".text\n.globl _start\n_start:\n"
	"	xorl %ebp,%ebp\n"
	"	movl (%esp),%eax\n"
	"	leal 4(%esp),%edx\n"
	"	andl $-16,%esp\n"
	"	subl $8,%esp\n"
	"	pushl %edx\n"
	"	pushl %eax\n"
	"	call kmain\n"
	"	hlt\n");

static ul slen(const char *s) { ul n = 0; while (s[n]) n++; return n; }
static void puts_(const char *s) { sc3(4, 1, (long)s, slen(s)); }
static void putn(long v)
{
	char b[16]; int i = 15; int neg = v < 0; ul u = neg ? -(ul)v : (ul)v;
	b[i] = 0;
	do { b[--i] = '0' + u % 10; u /= 10; } while (u);
	if (neg) b[--i] = '-';
	puts_(b + i);
}
static int streq(const char *a, const char *b) { while (*a && *a == *b) a++, b++; return *a == *b; }

static int pass, fail;
static void check(const char *name, int ok, long got)
{
	if (ok) { pass++; puts_("KTEST ok "); puts_(name); puts_("\n"); }
	else { fail++; puts_("KTEST FAIL "); puts_(name); puts_(" got="); putn(got); puts_("\n"); }
}

struct old_sigaction { void (*h)(int); ul mask, flags; void (*restorer)(void); };
struct utsname { char s[6][65]; };
struct sysinfo { long uptime; ul loads[3], totalram, freeram, shared, buffer, tswap, fswap; unsigned short procs; char pad[22]; };

static volatile int usr1_count, segv_count;
static volatile ul segv_addr;
static void on_usr1(int sig) { if (sig == SIGUSR1) usr1_count++; }

struct sigcontext_min { ul regs[12]; ul trapno, err, eip; ul cs, eflags, esp_at_signal, ss, fpstate, oldmask, cr2; };
/*
 * SIGSEGV handler for the vm checks: make the faulting page writable.  The
 * asm entry hands C a pointer to the sigcontext that follows `sig` in the
 * frame (C must not take the address of its own argument slot for that).
 */
void on_segv_c(int sig, struct sigcontext_min *sc)
{
	(void)sig;
	segv_count++;
	segv_addr = sc->cr2;
	sc3(125, (long)(sc->cr2 & ~4095UL), 4096, 3);
}

void on_segv(int sig);
__asm__(".text\n.globl on_segv\non_segv:\n"
	"	leal 8(%esp),%eax\n"
	"	pushl %eax\n"
	"	pushl 8(%esp)\n"
	"	call on_segv_c\n"
	"	addl $8,%esp\n"
	"	ret\n");

static long mmap_anon(ul len, int prot)
{
	ul a[6] = { 0, len, (ul)prot, 0x22, (ul)-1, 0 };
	return sc1(90, a);
}

static void die_badframe(void)
{
	/* a sigcontext whose cs is the kernel's: sigreturn must refuse it */
	static ul frame[22];
	frame[15] = 0x10;	/* cs */
	frame[18] = 0x2b;	/* ss */
	__asm__ volatile("movl %0,%%esp\n\tmovl $119,%%eax\n\tint $0x80" : : "r"(frame) : "memory");
}

void kmain(int argc, char **argv)
{
	long r;
	int i;

	for (i = 1; i < argc; i++) {
		if (streq(argv[i], "segv")) {
			puts_("KTEST unhandled SIGSEGV next\n");
			*(volatile int *)0 = 1;
		}
		if (streq(argv[i], "badframe")) {
			puts_("KTEST forged sigreturn frame next\n");
			die_badframe();
		}
	}

	/* built-in modules: their own exception tables must fix up faults */
	r = sc1(122, 0x1000);
	check("module utsname: uname(bad) = -EFAULT", r == -EFAULT, r);
	{
		static struct utsname u;
		r = sc1(122, &u);
		check("module utsname: uname() works", r == 0 && streq(u.s[0], "Linux") &&
		      streq(u.s[2], "2.0.36-lab"), r);
	}
	r = sc2(74, 0x1000, 5);
	check("module utsname: sethostname(bad) = -EFAULT", r == -EFAULT, r);
	r = sc1(13, 0x1000);
	check("module clock: time(bad) = -EFAULT", r == -EFAULT, r);
	r = sc1(13, 0);
	check("module clock: time() after 1997-06-06", r >= 865555200L, r);
	r = sc2(78, 0x2000, 0);
	check("module clock: gettimeofday(bad) = -EFAULT", r == -EFAULT, r);
	r = sc1(116, 0x3000);
	check("module sysinfo: sysinfo(bad) = -EFAULT", r == -EFAULT, r);
	{
		static struct sysinfo si;
		r = sc1(116, &si);
		check("module sysinfo: sysinfo() works", r == 0 && si.totalram > si.freeram &&
		      si.freeram > 0 && si.procs == 1, r);
	}

	/* kernel user-access primitives */
	r = sc2(5, 0x1000, 0);
	check("open(bad) = -EFAULT (strncpy_from_user)", r == -EFAULT, r);
	r = sc2(5, "/etc/passwd", 0);
	check("open(name) = -ENOENT", r == -ENOENT, r);
	r = sc3(4, 1, 0xC0000000L, 4);
	check("write(kernel address) = -EFAULT (access_ok)", r == -EFAULT, r);
	{
		struct { const char *b; ul n; } iov[2] = { { "KTEST writev ", 13 }, { "ok\n", 3 } };
		ul rl[2] = { 0, 0 };
		long ts[2] = { 0, 20 * 1000 * 1000 };
		r = sc3(146, 1, iov, 2);
		check("writev() writes both pieces", r == 16, r);
		r = sc3(146, 1, 0x1000, 2);
		check("writev(bad iovec) = -EFAULT", r == -EFAULT, r);
		r = sc2(77, 0, 0x1000);
		check("getrusage(bad) = -EFAULT", r == -EFAULT, r);
		r = sc2(76, 3, rl);
		check("getrlimit(STACK) = 8 MiB", r == 0 && rl[0] == 8UL << 20, (long)rl[0]);
		r = sc1(162, ts);
		check("nanosleep(20 ms)", r == 0, r);
		r = sc1(109, 0x1000);
		check("module utsname: olduname(bad) = -EFAULT", r == -EFAULT, r);
	}
	r = sc0(250);
	check("unknown syscall = -ENOSYS", r == -ENOSYS, r);
	r = sc3(88, 0x12345678, 672274793, 0x01234567);
	check("reboot(bad magic) = -EINVAL", r == -22, r);

	/* signal delivery through the on-stack trampoline, SA_ONESHOT */
	{
		struct old_sigaction sa = { on_usr1, 0, SA_ONESHOT, 0 }, old;
		r = sc3(67, SIGUSR1, &sa, 0);
		check("sigaction(SIGUSR1, no restorer)", r == 0, r);
		r = sc2(37, 1, SIGUSR1);
		check("kill(1, SIGUSR1) delivered via stack trampoline", r == 0 && usr1_count == 1,
		      usr1_count);
		r = sc3(67, SIGUSR1, 0, &old);
		check("SA_ONESHOT reset the handler", r == 0 && old.h == 0, (long)old.h);
	}
	/* blocked signals stay pending until unblocked */
	{
		struct old_sigaction sa = { on_usr1, 0, 0, 0 };
		ul set = 1UL << (SIGUSR1 - 1), pending = 0;
		sc3(67, SIGUSR1, &sa, 0);
		sc3(126, 0 /* SIG_BLOCK */, &set, 0);
		sc2(37, 1, SIGUSR1);
		sc1(73, &pending);
		check("blocked SIGUSR1 stays pending", usr1_count == 1 && pending == set, usr1_count);
		sc3(126, 1 /* SIG_UNBLOCK */, &set, 0);
		check("unblocking delivers it", usr1_count == 2, usr1_count);
	}

	/* stack growth: touch 128 KiB below the 64 KiB stack */
	{
		ul val = 0;
		__asm__ volatile("movl %%esp,%%ecx\n\t"
				 "subl $0x20000,%%esp\n\t"
				 "movl $0x5a5a,(%%esp)\n\t"
				 "movl (%%esp),%0\n\t"
				 "movl %%ecx,%%esp" : "=r"(val) : : "ecx", "memory");
		check("stack grows down on demand", val == 0x5a5a, (long)val);
	}

	/* brk: demand-zero heap */
	{
		ul cur = (ul)sc1(45, 0), top;
		top = (ul)sc1(45, cur + 3 * 4096);
		check("brk grows", top == cur + 3 * 4096, (long)top);
		check("heap is zero", *(volatile ul *)(top - 8) == 0, 0);
		*(volatile ul *)(top - 8) = 7;
		top = (ul)sc1(45, cur);
		check("brk shrinks", top == cur, (long)top);
	}

	/* vm area split and merge with mprotect, munmap in the middle */
	{
		struct old_sigaction sa = { on_segv, 0, 0, 0 };
		char *p = (char *)mmap_anon(3 * 4096, 3);
		check("mmap 3 pages", (ul)p < 0xC0000000UL && !((ul)p & 4095), (long)p);
		sc3(67, SIGSEGV, &sa, 0);
		p[0] = 1; p[4096] = 2; p[8192] = 3;
		r = sc3(125, (long)(p + 4096), 4096, 1);
		check("mprotect middle page read-only", r == 0, r);
		p[0] = 4; p[8192] = 5;
		check("neighbours stay writable", segv_count == 0, segv_count);
		p[4096] = 6;
		check("store to read-only middle page: one SIGSEGV", segv_count == 1 &&
		      segv_addr == (ul)(p + 4096) && p[4096] == 6, segv_count);
		r = sc3(125, (long)p, 3 * 4096 + 4096, 1);
		check("mprotect over a hole = -ENOMEM", r == -12, r);
		r = sc2(91, p + 4096, 4096);
		check("munmap middle page", r == 0, r);
		r = sc3(125, (long)p, 3 * 4096, 1);
		check("mprotect across the unmapped page = -ENOMEM", r == -12, r);
		check("outer pages keep their data", p[0] == 4 && p[8192] == 5, p[0]);
		r = sc2(91, p, 3 * 4096);
		check("munmap all", r == 0, r);
		r = mmap_anon(4096, 3);
		check("mmap reuses the freed range", r == (long)p, r);
		{
			ul a[6] = { 0, 4096, 3, 0x02 /* file mapping */, 3, 0 };
			r = sc1(90, a);
			check("file mmap refused", r == -19 || r == -22, r);
		}
	}

	puts_("KTEST-RESULT pass=");
	putn(pass);
	puts_(" fail=");
	putn(fail);
	puts_("\n");
	sc3(88, 0xfee1dead, 672274793, 0x4321FEDC);	/* POWER_OFF */
	for (;;)
		;
}
