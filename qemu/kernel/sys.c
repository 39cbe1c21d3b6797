/*
 * sys.c - the system call table and the simple system calls.
 *
 * Linux i386 numbers and conventions: int $0x80, number in %eax, arguments
 * in %ebx, %ecx, %edx, %esi, %edi, %ebp, result or -errno in %eax.  entry.S
 * calls table[nr](ebx, ecx, edx, esi, edi, ebp, regs); most calls just
 * ignore the trailing arguments.  Unknown numbers get -ENOSYS.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "errno.h"
#include "ptrace.h"
#include "sched.h"
#include "uaccess.h"
#include "unistd.h"
#include "module.h"
#include "timex.h"

asmlinkage long sys_ni_syscall(void)
{
	return -ENOSYS;
}

/* defined elsewhere */
asmlinkage long sys_exit(int);
asmlinkage long sys_brk(unsigned long);
asmlinkage long sys_sigaction();
asmlinkage long sys_sigreturn();
asmlinkage long sys_sigprocmask();
asmlinkage long sys_sigpending();
asmlinkage long sys_sgetmask(void);
asmlinkage long sys_ssetmask(long);
asmlinkage long sys_kill(int, int);
asmlinkage long sys_old_mmap();
asmlinkage long sys_munmap();
asmlinkage long sys_mprotect();
asmlinkage long sys_getrlimit();
asmlinkage long sys_setrlimit();
asmlinkage long sys_getrusage();
asmlinkage long sys_nanosleep();

static asmlinkage long sys_write(unsigned int fd, const char *buf, size_t count);
static asmlinkage long sys_read(unsigned int fd, char *buf, size_t count);
struct iovec;
static asmlinkage long sys_readv(unsigned int fd, const struct iovec *vec, unsigned long vlen);
static asmlinkage long sys_writev(unsigned int fd, const struct iovec *vec, unsigned long vlen);
static asmlinkage long sys_open(const char *filename, int flags, int mode);
static asmlinkage long sys_close(unsigned int fd);
static asmlinkage long sys_ioctl(unsigned int fd, unsigned int cmd, unsigned long arg);
static asmlinkage long sys_getpid(void);
static asmlinkage long sys_getppid(void);
static asmlinkage long sys_times(void *tbuf);
static asmlinkage long sys_reboot(unsigned int magic1, unsigned int magic2, unsigned int cmd);

syscall_fn sys_call_table[NR_syscalls] = {
	[0 ... NR_syscalls - 1] = (syscall_fn)sys_ni_syscall,
	[__NR_exit]        = (syscall_fn)sys_exit,
	[__NR_read]        = (syscall_fn)sys_read,
	[__NR_write]       = (syscall_fn)sys_write,
	[__NR_open]        = (syscall_fn)sys_open,
	[__NR_close]       = (syscall_fn)sys_close,
	[__NR_getpid]      = (syscall_fn)sys_getpid,
	[__NR_kill]        = (syscall_fn)sys_kill,
	[__NR_times]       = (syscall_fn)sys_times,
	[__NR_brk]         = (syscall_fn)sys_brk,
	[__NR_ioctl]       = (syscall_fn)sys_ioctl,
	[__NR_getppid]     = (syscall_fn)sys_getppid,
	[__NR_sigaction]   = (syscall_fn)sys_sigaction,
	[__NR_sgetmask]    = (syscall_fn)sys_sgetmask,
	[__NR_ssetmask]    = (syscall_fn)sys_ssetmask,
	[__NR_sigpending]  = (syscall_fn)sys_sigpending,
	[__NR_reboot]      = (syscall_fn)sys_reboot,
	[__NR_mmap]        = (syscall_fn)sys_old_mmap,
	[__NR_munmap]      = (syscall_fn)sys_munmap,
	[__NR_sigreturn]   = (syscall_fn)sys_sigreturn,
	[__NR_mprotect]    = (syscall_fn)sys_mprotect,
	[__NR_sigprocmask] = (syscall_fn)sys_sigprocmask,
	[__NR_setrlimit]   = (syscall_fn)sys_setrlimit,
	[__NR_getrlimit]   = (syscall_fn)sys_getrlimit,
	[__NR_ugetrlimit]  = (syscall_fn)sys_getrlimit,
	[__NR_getrusage]   = (syscall_fn)sys_getrusage,
	[__NR_readv]       = (syscall_fn)sys_readv,
	[__NR_writev]      = (syscall_fn)sys_writev,
	[__NR_nanosleep]   = (syscall_fn)sys_nanosleep,
};

/* Built-in modules add their calls at boot (module.c). */
int register_syscall(unsigned int nr, syscall_fn fn)
{
	if (nr >= NR_syscalls || sys_call_table[nr] != (syscall_fn)sys_ni_syscall)
		return -EBUSY;
	sys_call_table[nr] = fn;
	return 0;
}

/*
 * write(2): fd 1 and 2 are the console.  The buffer is copied in chunks
 * with copy_from_user; a bad pointer faults once and gives -EFAULT (or the
 * count already written, if some chunks got out).
 */
static asmlinkage long sys_write(unsigned int fd, const char *buf, size_t count)
{
	char chunk[256];
	size_t done = 0;

	if (fd != 1 && fd != 2)
		return -EBADF;
	if ((long)count < 0)
		return -EINVAL;
	while (done < count) {
		size_t n = min(count - done, sizeof(chunk));
		size_t left = copy_from_user(chunk, buf + done, n);
		console_write(chunk, n - left);
		done += n - left;
		if (left)
			return done ? (long)done : -EFAULT;
	}
	return (long)done;
}

struct iovec {
	void *iov_base;
	size_t iov_len;
};

#define UIO_MAXIOV 1024

/* writev(2): each piece like write(2); stops at the first bad piece. */
static asmlinkage long sys_writev(unsigned int fd, const struct iovec *vec, unsigned long vlen)
{
	unsigned long i;
	long total = 0;

	if (fd != 1 && fd != 2)
		return -EBADF;
	if (vlen > UIO_MAXIOV)
		return -EINVAL;
	if (!access_ok(vec, vlen * sizeof(*vec)))
		return -EFAULT;
	for (i = 0; i < vlen; i++) {
		const char *base;
		size_t len;
		long n;
		if (__get_user(base, &vec[i].iov_base) || __get_user(len, &vec[i].iov_len))
			return total ? total : -EFAULT;
		n = sys_write(fd, base, len);
		if (n < 0)
			return total ? total : n;
		total += n;
		if ((size_t)n < len)
			break;
	}
	return total;
}

static asmlinkage long sys_readv(unsigned int fd, const struct iovec *vec, unsigned long vlen)
{
	(void)vec;
	(void)vlen;
	return fd == 0 ? 0 : -EBADF;
}

/* read(2): there is no input; fd 0 is at end of file. */
static asmlinkage long sys_read(unsigned int fd, char *buf, size_t count)
{
	(void)buf;
	(void)count;
	return fd == 0 ? 0 : -EBADF;
}

/* open(2): the name is fetched like any path, but there are no files. */
static asmlinkage long sys_open(const char *filename, int flags, int mode)
{
	char name[256];
	long len;

	(void)flags;
	(void)mode;
	len = strncpy_from_user(name, filename, sizeof(name));
	if (len < 0)
		return len;
	if (len == sizeof(name))
		return -ENAMETOOLONG;
	return -ENOENT;
}

static asmlinkage long sys_close(unsigned int fd)
{
	return fd <= 2 ? 0 : -EBADF;
}

static asmlinkage long sys_ioctl(unsigned int fd, unsigned int cmd, unsigned long arg)
{
	(void)cmd;
	(void)arg;
	return fd <= 2 ? -ENOTTY : -EBADF;
}

static asmlinkage long sys_getpid(void)
{
	return current->pid;
}

static asmlinkage long sys_getppid(void)
{
	return current->ppid;
}

struct tms {
	clock_t tms_utime;
	clock_t tms_stime;
	clock_t tms_cutime;
	clock_t tms_cstime;
};

/* times(2): tick counts (HZ per second) and jiffies as the return value. */
static asmlinkage long sys_times(void *tbuf)
{
	if (tbuf) {
		struct tms t;
		t.tms_utime = current->utime;
		t.tms_stime = current->stime;
		t.tms_cutime = current->cutime;
		t.tms_cstime = current->cstime;
		if (copy_to_user(tbuf, &t, sizeof(t)))
			return -EFAULT;
	}
	return (long)jiffies;
}

#define LINUX_REBOOT_MAGIC1        0xfee1dead
#define LINUX_REBOOT_MAGIC2        672274793
#define LINUX_REBOOT_MAGIC2A       85072278
#define LINUX_REBOOT_MAGIC2B       369367448
#define LINUX_REBOOT_MAGIC2C       537993216
#define LINUX_REBOOT_CMD_RESTART   0x01234567
#define LINUX_REBOOT_CMD_HALT      0xCDEF0123
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321FEDC
#define LINUX_REBOOT_CMD_CAD_ON    0x89ABCDEF
#define LINUX_REBOOT_CMD_CAD_OFF   0x00000000

/*
 * reboot(2).  All three stopping commands reset the machine: QEMU with
 * -no-reboot turns the reset into a clean exit (status 0).
 */
static asmlinkage long sys_reboot(unsigned int magic1, unsigned int magic2, unsigned int cmd)
{
	if (magic1 != LINUX_REBOOT_MAGIC1 ||
	    (magic2 != LINUX_REBOOT_MAGIC2 && magic2 != LINUX_REBOOT_MAGIC2A &&
	     magic2 != LINUX_REBOOT_MAGIC2B && magic2 != LINUX_REBOOT_MAGIC2C))
		return -EINVAL;
	switch (cmd) {
	case LINUX_REBOOT_CMD_RESTART:
		printk("Restarting system.\n");
		machine_restart();
	case LINUX_REBOOT_CMD_HALT:
		printk("System halted.\n");
		machine_restart();
	case LINUX_REBOOT_CMD_POWER_OFF:
		printk("Power down.\n");
		machine_restart();
	case LINUX_REBOOT_CMD_CAD_ON:
	case LINUX_REBOOT_CMD_CAD_OFF:
		return 0;
	default:
		return -EINVAL;
	}
}

/*
 * labtest=oops: entry.S calls this at init's first system call.  A kernel
 * NULL-pointer store, with no exception-table entry: do_page_fault finds no
 * fixup and dies with an Oops (QEMU exit status 29).
 */
asmlinkage void __probe lab_trigger_oops(void)
{
	unsigned long *bad = (unsigned long *)4;

	printk("labtest=oops: kernel NULL pointer store at init's first system call\n");
	__asm__("" : "+r"(bad));	/* hide the constant from the compiler */
	*(volatile unsigned long *)bad = 0x0bad0bad;
	panic("labtest=oops: the bad store did not fault");
}
