/* demand: touch N fresh anonymous pages, 16-page chunks mmapped and
 * munmapped inside the loop; each page is read (must be zero) then written. */
#include "work.h"

static void step(u32 i, u32 total) { demand_touch(total - i); }

const struct workload workload = {
	"demand", 1000, 0, step, demand_teardown
};
