/* Shared fault primitives and the measured-loop driver interface. */
#ifndef GDBFAULT_WORK_H
#define GDBFAULT_WORK_H
#include "rt.h"

struct counts {
	volatile u32 sigsegv;       /* SIGSEGVs the handler caught */
	volatile u32 efault;        /* system calls that returned -EFAULT */
	volatile u32 demand_pages;  /* fresh anonymous pages touched */
	volatile u32 zero_ok;       /* every fresh page read back as zero */
	volatile u32 errors;        /* anything that went wrong */
};
extern struct counts cnt;

/* One workload = setup (before START, must not fault), one step per
 * iteration inside the measured loop, teardown after the loop. */
struct workload {
	const char *name;
	u32 default_iterations;
	int (*setup)(void);                 /* 0 on success */
	void (*step)(u32 i, u32 total);
	void (*teardown)(void);
};
extern const struct workload workload;

/* setup helpers */
int segv_handler_setup(void);     /* sigaction(SIGSEGV), SA_RESTORER (x86_64: rt_sigaction) */
int mprotect_page_setup(void);    /* one RW page, left untouched */

/* one fault each (see README.md) */
void mprotect_cycle(u32 i);       /* mprotect R, store, SIGSEGV, handler RW, retry */
void demand_touch(u32 pages_left);/* next fresh page of the current chunk */
void demand_teardown(void);       /* munmap a partly used chunk */
void efault_call(u32 i);          /* one syscall on an unmapped user address */

__attribute__((noreturn)) void fatal(const char *what, unsigned long a, unsigned long b);

#endif
