/*
 * mod_sysinfo.c - built-in module "sysinfo": sysinfo(2).
 */
#define EXTABLE_SECTION "__ex_table_sysinfo"
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "errno.h"
#include "uaccess.h"
#include "module.h"
#include "mm.h"
#include "timex.h"
#include "unistd.h"

/* The 2.0 layout of struct sysinfo (i386). */
struct sysinfo {
	long uptime;
	unsigned long loads[3];
	unsigned long totalram;
	unsigned long freeram;
	unsigned long sharedram;
	unsigned long bufferram;
	unsigned long totalswap;
	unsigned long freeswap;
	unsigned short procs;
	char _f[22];
};

static asmlinkage long sys_sysinfo(struct sysinfo *info)
{
	struct sysinfo val = { 0 };

	val.uptime = (long)(jiffies / HZ);
	val.totalram = nr_total_pages() * PAGE_SIZE;
	val.freeram = nr_free_pages() * PAGE_SIZE;
	val.procs = 1;
	if (copy_to_user(info, &val, sizeof(val)))
		return -EFAULT;
	return 0;
}

static int sysinfo_init(void)
{
	register_syscall(__NR_sysinfo, (syscall_fn)sys_sysinfo);
	return 0;
}

DECLARE_BUILTIN_MODULE(sysinfo, sysinfo_init);
