/* mixed: each round one mprotect/SIGSEGV cycle, one fresh demand page and
 * one -EFAULT system call. */
#include "work.h"

static void step(u32 i, u32 total)
{
	mprotect_cycle(i);
	demand_touch(total - i);
	efault_call(i);
}

const struct workload workload = {
	"mixed", 1000, mprotect_page_setup, step, demand_teardown
};
