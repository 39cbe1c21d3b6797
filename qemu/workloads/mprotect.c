/* mprotect: the 1997 loop.  Each iteration: mprotect(page, PROT_READ), store
 * to it (SIGSEGV), the handler mprotects it PROT_READ|PROT_WRITE, the store
 * is retried on sigreturn and succeeds. */
#include "work.h"

static void step(u32 i, u32 total) { (void)total; mprotect_cycle(i); }

const struct workload workload = {
	"mprotect", 10000, mprotect_page_setup, step, 0
};
