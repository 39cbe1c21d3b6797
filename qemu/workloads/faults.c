/* The three kinds of fault the workloads cause, shared by all four. */
#include "work.h"

struct counts cnt = { .zero_ok = 1 };

/* ---- SIGSEGV handler ---------------------------------------------------- */

static void *volatile mp_page;          /* the mprotect workload's page */
static volatile u32 mp_armed;           /* a SIGSEGV is expected now */
static volatile u32 mp_hits;            /* SIGSEGVs in the current cycle */

__attribute__((noreturn)) void fatal(const char *what, unsigned long a, unsigned long b)
{
	struct json j;
	json_begin(&j, "GDBFAULT-ERROR");
	json_str(&j, "error", what);
	json_u64(&j, "a", a);
	json_u64(&j, "b", b);
	json_u64(&j, "sigsegv", cnt.sigsegv);
	json_u64(&j, "efault", cnt.efault);
	json_u64(&j, "demand_pages", cnt.demand_pages);
	json_end_print(&j);
	rt_finish(1);   /* exit(1), also as pid 1: never a clean reboot */
}

void rt_segv_handler(int sig, const struct sigcontext *sc)
{
	(void)sig;
	cnt.sigsegv++;
	/* Any SIGSEGV other than the one store we expect would loop forever
	 * (the faulting instruction is retried): stop the run instead. */
	if (!mp_armed || ++mp_hits > 1)
		fatal("unexpected SIGSEGV", SC_IP(sc), sc->cr2);
	if (sc->cr2 != (unsigned long)mp_page)
		cnt.errors++;
	if (is_err(sys_mprotect(mp_page, PAGE_SIZE, PROT_READ | PROT_WRITE)))
		fatal("mprotect(RW) in handler failed", SC_IP(sc), sc->cr2);
}

int segv_handler_setup(void)
{
	struct k_sigaction sa;
	sa.handler = rt_segv_entry;
	sa.mask = 0;
	sa.flags = SA_RESTORER;
	sa.restorer = rt_restorer;
	return is_err(sys_sigaction(SIGSEGV, &sa, 0)) ? -1 : 0;
}

/* ---- mprotect / SIGSEGV cycle --------------------------------------------- */

int mprotect_page_setup(void)
{
	long p = sys_mmap_anon(PAGE_SIZE, PROT_READ | PROT_WRITE);
	if (is_err(p) || (unsigned long)p < 0x10000)
		return -1;
	mp_page = (void *)p;            /* not touched: no fault in setup */
	return 0;
}

void mprotect_cycle(u32 i)
{
	volatile u32 *w = mp_page;
	u32 val = 0x80000000u | i;      /* never 0: a lost store shows */
	u32 before = cnt.sigsegv;

	if (is_err(sys_mprotect(mp_page, PAGE_SIZE, PROT_READ))) {
		cnt.errors++;
		return;
	}
	mp_hits = 0;
	mp_armed = 1;
	*w = val;                       /* SIGSEGV; the handler makes it RW; retried */
	mp_armed = 0;
	if (*w != val || cnt.sigsegv != before + 1)
		cnt.errors++;
}

/* ---- demand-zero pages ---------------------------------------------------- */

#define CHUNK_PAGES 16

static u8 *dz_chunk;                    /* current chunk, 0 if none */
static u32 dz_pages;                    /* its size in pages */
static u32 dz_next;                     /* next fresh page in it */

void demand_touch(u32 pages_left)
{
	volatile u32 *w;

	if (dz_chunk && dz_next == dz_pages) {
		if (is_err(sys_munmap(dz_chunk, dz_pages * PAGE_SIZE)))
			cnt.errors++;
		dz_chunk = 0;
	}
	if (!dz_chunk) {
		u32 n = pages_left < CHUNK_PAGES ? pages_left : CHUNK_PAGES;
		long p;
		if (n == 0)
			n = 1;
		p = sys_mmap_anon(n * PAGE_SIZE, PROT_READ | PROT_WRITE);
		if (is_err(p) || (unsigned long)p < 0x10000) {
			cnt.errors++;
			return;
		}
		dz_chunk = (u8 *)p;
		dz_pages = n;
		dz_next = 0;
	}
	w = (volatile u32 *)(dz_chunk + dz_next * PAGE_SIZE);
	dz_next++;
	/* read first (the fault), then write */
	if (w[0] | w[1] | w[511] | w[1023])
		cnt.zero_ok = 0;
	w[0] = 0xdeadbeefu;
	w[1023] = (u32)(unsigned long)w;
	if (w[0] != 0xdeadbeefu || w[1023] != (u32)(unsigned long)w)
		cnt.errors++;
	cnt.demand_pages++;
}

void demand_teardown(void)
{
	if (dz_chunk && is_err(sys_munmap(dz_chunk, dz_pages * PAGE_SIZE)))
		cnt.errors++;
	dz_chunk = 0;
}

/* ---- -EFAULT system calls ------------------------------------------------- */

/* unmapped low user addresses; never 0 (times(NULL), sigaction(sig, NULL)
 * are valid calls) */
static const unsigned long bad_addr[3] = { 0x1000, 0x2000, 0x3000 };

void efault_call(u32 i)
{
	unsigned long bad = bad_addr[(i / 3) % 3];
	long r;

	switch (i % 3) {
	case 0:
		r = sys_write(1, (const void *)bad, 8);
		break;
	case 1:
		r = sys_times((struct tms *)bad);
		break;
	default:
		r = sys_sigaction(SIGUSR1, (const struct k_sigaction *)bad, 0);
		break;
	}
	if (r == -EFAULT)
		cnt.efault++;
	else
		cnt.errors++;
}
