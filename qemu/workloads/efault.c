/* efault: N system calls on unmapped user addresses (0x1000, 0x2000, 0x3000),
 * rotating write(1, bad, 8), times(bad), sigaction(SIGUSR1, bad, NULL);
 * each must return -EFAULT. */
#include "work.h"

static void step(u32 i, u32 total) { (void)total; efault_call(i); }

const struct workload workload = {
	"efault", 10000, 0, step, 0
};
