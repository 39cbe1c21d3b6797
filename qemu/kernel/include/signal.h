/* Linux i386 signal numbers and the old (non-RT) sigaction ABI. */
#ifndef _LAB_SIGNAL_H
#define _LAB_SIGNAL_H
#include "types.h"

#define NSIG 32

#define SIGHUP     1
#define SIGINT     2
#define SIGQUIT    3
#define SIGILL     4
#define SIGTRAP    5
#define SIGABRT    6
#define SIGBUS     7
#define SIGFPE     8
#define SIGKILL    9
#define SIGUSR1   10
#define SIGSEGV   11
#define SIGUSR2   12
#define SIGPIPE   13
#define SIGALRM   14
#define SIGTERM   15
#define SIGSTKFLT 16
#define SIGCHLD   17
#define SIGCONT   18
#define SIGSTOP   19
#define SIGTSTP   20
#define SIGTTIN   21
#define SIGTTOU   22
#define SIGURG    23
#define SIGXCPU   24
#define SIGXFSZ   25
#define SIGVTALRM 26
#define SIGPROF   27
#define SIGWINCH  28
#define SIGIO     29
#define SIGPWR    30
#define SIGSYS    31

#define SA_NOCLDSTOP 0x00000001
#define SA_RESTORER  0x04000000
#define SA_NOMASK    0x40000000	/* do not block the signal in its handler */
#define SA_ONESHOT   0x80000000	/* reset to SIG_DFL when delivered */

#define SIG_BLOCK   0
#define SIG_UNBLOCK 1
#define SIG_SETMASK 2

typedef unsigned long sigset_t;	/* one bit per signal, bit (sig - 1) */
typedef void (*__sighandler_t)(int);

#define SIG_DFL ((__sighandler_t)0)
#define SIG_IGN ((__sighandler_t)1)

#define sigmask(sig) (1UL << ((sig) - 1))
#define _BLOCKABLE (~(sigmask(SIGKILL) | sigmask(SIGSTOP)))

/* What user space passes to sigaction (67): the layout of Linux i386. */
struct old_sigaction {
	__sighandler_t sa_handler;
	unsigned long sa_mask;
	unsigned long sa_flags;
	void (*sa_restorer)(void);
};

/* The kernel's copy, one per signal. */
struct k_sigaction {
	__sighandler_t sa_handler;
	sigset_t sa_mask;
	unsigned long sa_flags;
	void (*sa_restorer)(void);
};

struct signal_struct {
	struct k_sigaction action[NSIG];
};

/* struct sigcontext, Linux i386 layout (the same since 2.0). */
struct sigcontext {
	unsigned short gs, __gsh;
	unsigned short fs, __fsh;
	unsigned short es, __esh;
	unsigned short ds, __dsh;
	unsigned long edi;
	unsigned long esi;
	unsigned long ebp;
	unsigned long esp;
	unsigned long ebx;
	unsigned long edx;
	unsigned long ecx;
	unsigned long eax;
	unsigned long trapno;
	unsigned long err;
	unsigned long eip;
	unsigned short cs, __csh;
	unsigned long eflags;
	unsigned long esp_at_signal;
	unsigned short ss, __ssh;
	unsigned long fpstate;
	unsigned long oldmask;
	unsigned long cr2;
};

struct task_struct;
struct pt_regs;

void force_sig(int sig, struct task_struct *p);
int send_sig(int sig, struct task_struct *p, int priv);
asmlinkage int do_signal(struct pt_regs *regs);
void signal_init_task(struct task_struct *p);

#endif
