/*
 * resource.c - resource limits and usage: getrlimit, setrlimit, getrusage,
 * and nanosleep (the only call that waits: with a single process, waiting is
 * just halting until the timer has ticked far enough).
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "errno.h"
#include "sched.h"
#include "system.h"
#include "timex.h"
#include "uaccess.h"
#include "mm.h"

#define RLIM_NLIMITS 10
#define RLIMIT_STACK 3
#define RLIM_INFINITY 0x7fffffffUL

struct rlimit {
	unsigned long rlim_cur;
	unsigned long rlim_max;
};

static struct rlimit init_rlimits[RLIM_NLIMITS] = {
	[0 ... RLIM_NLIMITS - 1] = { RLIM_INFINITY, RLIM_INFINITY },
	[RLIMIT_STACK] = { STACK_LIMIT, STACK_LIMIT },
};

asmlinkage long sys_getrlimit(unsigned int resource, struct rlimit *rlim)
{
	if (resource >= RLIM_NLIMITS)
		return -EINVAL;
	if (copy_to_user(rlim, &init_rlimits[resource], sizeof(*rlim)))
		return -EFAULT;
	return 0;
}

asmlinkage long sys_setrlimit(unsigned int resource, struct rlimit *rlim)
{
	struct rlimit new;

	if (resource >= RLIM_NLIMITS)
		return -EINVAL;
	if (copy_from_user(&new, rlim, sizeof(new)))
		return -EFAULT;
	if (new.rlim_cur > new.rlim_max || new.rlim_max > init_rlimits[resource].rlim_max)
		return -EPERM;
	init_rlimits[resource] = new;
	return 0;
}

struct timeval {
	long tv_sec;
	long tv_usec;
};

struct rusage {
	struct timeval ru_utime;
	struct timeval ru_stime;
	long ru_other[14];	/* maxrss ... nivcsw: not tracked, zero */
};

static void ticks_to_timeval(long ticks, struct timeval *tv)
{
	tv->tv_sec = ticks / HZ;
	tv->tv_usec = (ticks % HZ) * (1000000 / HZ);
}

asmlinkage long sys_getrusage(int who, struct rusage *ru)
{
	struct rusage r = { 0 };

	if (who == 0) {		/* RUSAGE_SELF */
		ticks_to_timeval(current->utime, &r.ru_utime);
		ticks_to_timeval(current->stime, &r.ru_stime);
	} else if (who == -1) {	/* RUSAGE_CHILDREN: there are none */
		ticks_to_timeval(current->cutime, &r.ru_utime);
		ticks_to_timeval(current->cstime, &r.ru_stime);
	} else {
		return -EINVAL;
	}
	if (copy_to_user(ru, &r, sizeof(r)))
		return -EFAULT;
	return 0;
}

struct timespec {
	long tv_sec;
	long tv_nsec;
};

asmlinkage long sys_nanosleep(const struct timespec *req, struct timespec *rem)
{
	struct timespec t;
	unsigned long ticks, until;

	if (copy_from_user(&t, req, sizeof(t)))
		return -EFAULT;
	if (t.tv_sec < 0 || t.tv_nsec < 0 || t.tv_nsec >= 1000000000L)
		return -EINVAL;
	/* round up to whole ticks, plus one for the partial tick we are in */
	ticks = (unsigned long)t.tv_sec * HZ +
		((unsigned long)t.tv_nsec + (1000000000UL / HZ) - 1) / (1000000000UL / HZ);
	if (ticks)
		ticks++;
	until = jiffies + ticks;
	while ((long)(jiffies - until) < 0)
		__asm__ __volatile__("sti; hlt" ::: "memory");
	if (rem) {
		t.tv_sec = 0;
		t.tv_nsec = 0;
		if (copy_to_user(rem, &t, sizeof(t)))
			return -EFAULT;
	}
	return 0;
}
