/*
 * mod_clock.c - built-in module "clock": time(2), gettimeofday(2), stime(2).
 *
 * Wall time is a fixed boot epoch plus jiffies, not the RTC: the lab kernel
 * is deterministic, and two runs of a workload see the same clock.
 * (865555200 is 1997-06-06 00:00 UTC, the day of the seed patch.)
 */
#define EXTABLE_SECTION "__ex_table_clock"
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "errno.h"
#include "uaccess.h"
#include "module.h"
#include "timex.h"
#include "unistd.h"

#define BOOT_EPOCH 865555200L

struct timeval {
	long tv_sec;
	long tv_usec;
};

struct timezone {
	int tz_minuteswest;
	int tz_dsttime;
};

static long time_offset;	/* seconds added by stime() */

static void clock_now(struct timeval *tv)
{
	unsigned long j = jiffies;
	tv->tv_sec = BOOT_EPOCH + time_offset + (long)(j / HZ);
	tv->tv_usec = (long)(j % HZ) * (1000000 / HZ);
}

static asmlinkage long sys_time(long *tloc)
{
	struct timeval tv;

	clock_now(&tv);
	if (tloc && put_user(tv.tv_sec, tloc))
		return -EFAULT;
	return tv.tv_sec;
}

static asmlinkage long sys_stime(long *tptr)
{
	struct timeval tv;
	long value;

	if (get_user(value, tptr))
		return -EFAULT;
	clock_now(&tv);
	time_offset += value - tv.tv_sec;
	return 0;
}

static asmlinkage long sys_gettimeofday(struct timeval *tv, struct timezone *tz)
{
	struct timeval now;

	if (tv) {
		clock_now(&now);
		if (copy_to_user(tv, &now, sizeof(now)))
			return -EFAULT;
	}
	if (tz) {
		if (put_user(0, &tz->tz_minuteswest) || put_user(0, &tz->tz_dsttime))
			return -EFAULT;
	}
	return 0;
}

static int clock_init(void)
{
	register_syscall(__NR_time, (syscall_fn)sys_time);
	register_syscall(__NR_stime, (syscall_fn)sys_stime);
	register_syscall(__NR_gettimeofday, (syscall_fn)sys_gettimeofday);
	return 0;
}

DECLARE_BUILTIN_MODULE(clock, clock_init);
