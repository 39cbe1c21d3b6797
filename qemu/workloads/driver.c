/* The measured-loop driver shared by all workloads. */
#include "work.h"

/* "KEY=N" (key given with its '='): 1 and *out = N; 0 for other words;
 * a bad N is fatal (with the message `bad`) */
static int parse_number(const char *s, const char *key, const char *bad, u32 *out)
{
	u32 v = 0;
	while (*key)
		if (*s++ != *key++)
			return 0;
	if (*s < '0' || *s > '9')
		fatal(bad, 0, 0);
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (0xffffffffu - 9) / 10)
			fatal(bad, 0, 0);
		v = v * 10 + (u32)(*s - '0');
	}
	*out = v;
	return 1;
}

static void parse_word(const char *s, u32 *iterations, u32 *marks)
{
	if (!parse_number(s, "iterations=", "bad iterations= value", iterations)
	    && !parse_number(s, "mark=", "bad mark= value", &marks[0]))
		parse_number(s, "mark2=", "bad mark2= value", &marks[1]);
}

/*
 * "mark=N": called once, when N iterations are done (before iteration N+1;
 * N = 0 is before the first); "mark2=M" (M >= N) calls it a second time.  It does nothing: it is a place a debugger can
 * stop at exactly once (gdbfault --live-patch --patch-at N), instead of
 * counting N stops at the step function -- every stop moves the clock of a
 * guest being recorded.  noipa keeps the call and the symbol.
 */
__attribute__((noipa, noinline)) void gdbfault_mark(u32 done)
{
	__asm__ volatile("" : : "r"(done) : "memory");
}

static void progress(u32 done, u32 total)
{
	char b[64], *p = b;
	const char *s = "GDBFAULT-PROGRESS ";
	while (*s) *p++ = *s++;
	p = fmt_u64(p, done);
	*p++ = '/';
	p = fmt_u64(p, total);
	*p++ = '\n';
	put_buf(b, (size_t)(p - b));
}

__attribute__((noreturn)) void rt_main(int argc, char **argv, char **envp)
{
	u32 n = workload.default_iterations, i, every, countdown, stop, k;
	u32 marks[2] = { 0xffffffffu, 0xffffffffu };
	struct tms tm0, tm1;
	long t0, t1;
	u64 c0, c1, cycles;
	long pid;
	struct json j;

	/* iterations=N as an environment string or an argument word
	 * (the lab kernel passes `-append` words the Linux way); argv wins */
	for (i = 0; envp && envp[i]; i++)
		parse_word(envp[i], &n, marks);
	for (i = 1; i < (u32)argc; i++)
		parse_word(argv[i], &n, marks);

	cnt.zero_ok = 1;
	pid = sys_getpid();
	if (segv_handler_setup() != 0)
		fatal("sigaction(SIGSEGV) failed", 0, 0);
	if (workload.setup && workload.setup() != 0)
		fatal("setup failed", 0, 0);

	json_begin(&j, "GDBFAULT-START");
	json_str(&j, "workload", workload.name);
	json_u64(&j, "iterations", n);
	json_u64(&j, "pid", (u32)pid);
	json_end_print(&j);

	every = n / 10 + (n % 10 != 0); /* at most 10 lines, plus the last */
	if (every == 0)
		every = 1;
	countdown = every;

	t0 = sys_times(&tm0);
	c0 = rdtsc();
	if (marks[1] != 0xffffffffu && marks[1] < marks[0])
		fatal("mark2= is before mark=", marks[0], marks[1]);
	/* The same loop run in pieces, so that the marks cost no instruction
	 * per iteration: up to a mark, the call, on to the next one. */
	i = 0;
	for (k = 0;;) {
		stop = k < 2 && marks[k] < n ? marks[k] : n;
		for (; i < stop; i++) {
			workload.step(i, n);
			if (--countdown == 0 || i + 1 == n) {
				countdown = every;
				progress(i + 1, n);
			}
		}
		if (k < 2 && marks[k] <= n) {     /* here i == marks[k] */
			gdbfault_mark(i);
			k++;
			continue;
		}
		break;
	}
	c1 = rdtsc();
	t1 = sys_times(&tm1);

	if (workload.teardown)
		workload.teardown();

	cycles = c1 - c0;
	json_begin(&j, "GDBFAULT-RESULT");
	json_str(&j, "workload", workload.name);
	json_u64(&j, "iterations", n);
	json_u64(&j, "sigsegv", cnt.sigsegv);
	json_u64(&j, "efault", cnt.efault);
	json_u64(&j, "demand_pages", cnt.demand_pages);
	json_bool(&j, "zero_ok", cnt.zero_ok);
	json_u64(&j, "cycles", cycles);
	json_u64(&j, "cycles_per_iteration", n ? cycles / n : 0);
	json_u64(&j, "ticks_per_s", 100);
	json_u64(&j, "real_ticks", (u32)(t1 - t0));
	json_u64(&j, "user_ticks", (u32)(tm1.utime - tm0.utime));
	json_u64(&j, "sys_ticks", (u32)(tm1.stime - tm0.stime));
	json_u64(&j, "pid", (u32)pid);
	json_u64(&j, "errors", cnt.errors);
	json_end_print(&j);

	rt_finish(0);   /* reboot(RESTART) if pid 1 (guest init), else exit(0) */
}
