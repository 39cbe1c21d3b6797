/*
 * sched.c - the task.  There is exactly one process, init (pid 1); there is
 * no scheduler, so "current" never changes.  When init ends, so does the
 * run (qemu/README.md): "init exited with code n", then QEMU exit status 3.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "sched.h"
#include "signal.h"
#include "system.h"

union task_union init_task_union __aligned(KERNEL_STACK_SIZE);
struct task_struct *current = &init_task_union.task;

static const char *const signal_names[NSIG + 1] = {
	[SIGHUP] = "SIGHUP", [SIGINT] = "SIGINT", [SIGQUIT] = "SIGQUIT",
	[SIGILL] = "SIGILL", [SIGTRAP] = "SIGTRAP", [SIGABRT] = "SIGABRT",
	[SIGBUS] = "SIGBUS", [SIGFPE] = "SIGFPE", [SIGKILL] = "SIGKILL",
	[SIGUSR1] = "SIGUSR1", [SIGSEGV] = "SIGSEGV", [SIGUSR2] = "SIGUSR2",
	[SIGPIPE] = "SIGPIPE", [SIGALRM] = "SIGALRM", [SIGTERM] = "SIGTERM",
	[SIGSYS] = "SIGSYS",
};

/*
 * code: the exit status for exit(2) (already shifted: status << 8), or a
 * signal number for a task killed by a signal (2.x's convention).
 */
__noreturn void do_exit(int code)
{
	struct task_struct *tsk = current;
	int sig = code & 0x7f;

	cli();
	tsk->state = TASK_ZOMBIE;
	tsk->exit_code = code;
	if (sig) {
		const char *name = sig <= NSIG && signal_names[sig] ? signal_names[sig] : "signal";
		printk("%s (pid %d) killed by signal %d (%s)\n", tsk->comm, tsk->pid, sig, name);
		printk("init exited with code %d (killed by signal %d)\n", 128 + sig, sig);
	} else {
		printk("init exited with code %d\n", (code >> 8) & 0xff);
	}
	qemu_exit(1);
}

asmlinkage long sys_exit(int error_code)
{
	do_exit((error_code & 0xff) << 8);
}
