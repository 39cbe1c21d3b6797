/*
 * signal.c - signals: sigaction, force_sig, delivery and sigreturn.
 *
 * Pending and blocked are one word each (32 signals, as in 2.0).  A signal
 * is delivered on the way back to user mode (entry.S calls do_signal when
 * signal & ~blocked is non-zero): do_signal picks the lowest pending signal
 * and either applies the default action or builds a Linux i386 non-RT
 * signal frame on the user stack,
 *
 *	pretcode	-> sa_restorer (SA_RESTORER) or retcode below
 *	sig		   the handler's argument
 *	struct sigcontext  registers, trapno, err, oldmask, cr2
 *	retcode[8]	   popl %eax; movl $119,%eax; int $0x80
 *
 * and points the user's eip at the handler.  sigreturn (119) reads the
 * sigcontext back, checking that the segments and flags it restores cannot
 * raise the user's privileges.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "errno.h"
#include "ptrace.h"
#include "sched.h"
#include "signal.h"
#include "segment.h"
#include "string.h"
#include "uaccess.h"
#include "mm.h"

static struct kmem_cache sigact_cachep;

struct sigframe {
	unsigned long pretcode;
	int sig;
	struct sigcontext sc;
	char retcode[8];
};

/* Flags user code may change through sigreturn: CF PF AF ZF SF TF DF OF AC. */
#define FIX_EFLAGS 0x40DD5UL

void signal_init_task(struct task_struct *p)
{
	kmem_cache_init(&sigact_cachep, "signal_struct", sizeof(struct signal_struct));
	p->sig = kmem_cache_alloc(&sigact_cachep);
	if (!p->sig)
		panic("no memory for init's signal table");
	p->signal = 0;
	p->blocked = 0;
}

/*
 * Force a signal on a task, whatever it was doing with it: unblock it, make
 * an ignored signal take its default action again, and mark it pending.
 * This is how the kernel reports a fault the task caused (a SIGSEGV from
 * do_page_fault, for example); it is delivered on the return to user mode.
 */
void __probe force_sig(int sig, struct task_struct *p)
{
	unsigned long mask = sigmask(sig);
	struct k_sigaction *ka;

	if (!p->sig || sig < 1 || sig > NSIG)
		return;
	ka = &p->sig->action[sig - 1];
	if (ka->sa_handler == SIG_IGN)
		ka->sa_handler = SIG_DFL;
	p->blocked &= ~mask;
	p->signal |= mask;
}

/* An ordinary signal (kill): respects blocking and SIG_IGN at delivery. */
int send_sig(int sig, struct task_struct *p, int priv)
{
	(void)priv;
	if (sig < 0 || sig > NSIG)
		return -EINVAL;
	if (!sig)
		return 0;
	if (p->sig->action[sig - 1].sa_handler == SIG_IGN && sig != SIGCHLD)
		return 0;
	p->signal |= sigmask(sig);
	return 0;
}

/* ---- frame set-up ---------------------------------------------------- */

/*
 * Each field is stored with its own __put_user; the first failing store
 * abandons the frame (one fault, not twenty).
 */
#define PUT(val, field)							\
	do {								\
		if (__put_user((val), &frame->field))			\
			goto give_sigsegv;				\
	} while (0)

static int setup_frame(int sig, struct k_sigaction *ka, sigset_t oldmask,
		       struct pt_regs *regs)
{
	struct task_struct *tsk = current;
	struct sigframe *frame;
	unsigned long sp = regs->esp;

	/* leave (frame + 4) 16-byte aligned, as the i386 ABI wants at a call */
	frame = (struct sigframe *)(((sp - sizeof(*frame)) & ~15UL) - 4);
	if (!access_ok(frame, sizeof(*frame)))
		goto give_sigsegv;

	PUT(sig, sig);
	PUT(regs->xgs & 0xffff, sc.gs);
	PUT(regs->xfs & 0xffff, sc.fs);
	PUT(regs->xes & 0xffff, sc.es);
	PUT(regs->xds & 0xffff, sc.ds);
	PUT(regs->edi, sc.edi);
	PUT(regs->esi, sc.esi);
	PUT(regs->ebp, sc.ebp);
	PUT(regs->esp, sc.esp);
	PUT(regs->ebx, sc.ebx);
	PUT(regs->edx, sc.edx);
	PUT(regs->ecx, sc.ecx);
	PUT(regs->eax, sc.eax);
	PUT(tsk->tss.trap_no, sc.trapno);
	PUT(tsk->tss.error_code, sc.err);
	PUT(regs->eip, sc.eip);
	PUT(regs->xcs & 0xffff, sc.cs);
	PUT(regs->eflags, sc.eflags);
	PUT(regs->esp, sc.esp_at_signal);
	PUT(regs->xss & 0xffff, sc.ss);
	PUT(0, sc.fpstate);		/* the FPU is never switched: no state */
	PUT(oldmask, sc.oldmask);
	PUT(tsk->tss.cr2, sc.cr2);

	if (ka->sa_flags & SA_RESTORER) {
		PUT((unsigned long)ka->sa_restorer, pretcode);
	} else {
		/* popl %eax; movl $119,%eax; int $0x80 */
		PUT((unsigned long)frame->retcode, pretcode);
		PUT(0x58, retcode[0]);
		PUT(0xb8, retcode[1]);
		PUT(119, retcode[2]);
		PUT(0, retcode[3]);
		PUT(0, retcode[4]);
		PUT(0, retcode[5]);
		PUT(0xcd, retcode[6]);
		PUT(0x80, retcode[7]);
	}

	/* enter the handler: handler(sig), returning to pretcode */
	regs->esp = (unsigned long)frame;
	regs->eip = (unsigned long)ka->sa_handler;
	regs->xds = __USER_DS;
	regs->xes = __USER_DS;
	regs->xss = __USER_DS;
	regs->xcs = __USER_CS;
	regs->eflags &= ~0x100UL;	/* no single-stepping into the handler */
	return 0;

give_sigsegv:
	return -EFAULT;
}
#undef PUT

static void handle_signal(int sig, struct k_sigaction *ka, struct pt_regs *regs)
{
	struct task_struct *tsk = current;

	if (setup_frame(sig, ka, tsk->blocked, regs)) {
		/* no room for a frame: the task cannot go on */
		printk("%s[%d]: bad signal frame for signal %d, killed\n",
		       tsk->comm, tsk->pid, sig);
		do_exit(SIGSEGV);
	}
	if (ka->sa_flags & SA_ONESHOT)
		ka->sa_handler = SIG_DFL;
	if (!(ka->sa_flags & SA_NOMASK))
		tsk->blocked |= (ka->sa_mask | sigmask(sig)) & _BLOCKABLE;
}

/*
 * Called on the way back to user mode with a signal pending.  Delivers one
 * signal (the lowest-numbered): one handler frame per return, so a handler
 * runs with its own signal blocked before any other is considered.
 */
asmlinkage int do_signal(struct pt_regs *regs)
{
	struct task_struct *tsk = current;
	unsigned long pending;

	while ((pending = tsk->signal & ~tsk->blocked) != 0) {
		int sig = __builtin_ctzl(pending) + 1;
		struct k_sigaction *ka = &tsk->sig->action[sig - 1];

		tsk->signal &= ~sigmask(sig);
		if (ka->sa_handler == SIG_IGN)
			continue;
		if (ka->sa_handler == SIG_DFL) {
			switch (sig) {
			case SIGCHLD: case SIGCONT: case SIGWINCH: case SIGURG:
				continue;	/* default: ignore */
			case SIGSTOP: case SIGTSTP: case SIGTTIN: case SIGTTOU:
				continue;	/* no job control here */
			default:
				do_exit(sig);	/* default: terminate */
			}
		}
		handle_signal(sig, ka, regs);
		return 1;
	}
	return 0;
}

/* ---- system calls ---------------------------------------------------- */

#define GET(var, field)							\
	do {								\
		if (__get_user((var), &sc->field))			\
			goto badframe;					\
	} while (0)

/*
 * sigreturn (119): called from pretcode after the handler returned and the
 * trampoline popped `sig`, so the user's esp points at the sigcontext.
 */
asmlinkage long sys_sigreturn(unsigned long a1, unsigned long a2, unsigned long a3,
			      unsigned long a4, unsigned long a5, unsigned long a6,
			      struct pt_regs *regs)
{
	struct sigcontext *sc = (struct sigcontext *)regs->esp;
	unsigned long v, mask, eflags;
	unsigned short seg;

	(void)a1; (void)a2; (void)a3; (void)a4; (void)a5; (void)a6;
	if (!access_ok(sc, sizeof(*sc)))
		goto badframe;

	/* user segments only: the user data segment, or null for fs/gs/ds/es */
	GET(seg, gs);
	if (seg != 0 && seg != __USER_DS)
		goto badframe;
	regs->xgs = seg;
	GET(seg, fs);
	if (seg != 0 && seg != __USER_DS)
		goto badframe;
	regs->xfs = seg;
	GET(seg, es);
	if (seg != 0 && seg != __USER_DS)
		goto badframe;
	regs->xes = seg;
	GET(seg, ds);
	if (seg != 0 && seg != __USER_DS)
		goto badframe;
	regs->xds = seg;
	GET(seg, cs);
	if (seg != __USER_CS)
		goto badframe;
	regs->xcs = seg;
	GET(seg, ss);
	if (seg != __USER_DS)
		goto badframe;
	regs->xss = seg;

	GET(v, edi); regs->edi = v;
	GET(v, esi); regs->esi = v;
	GET(v, ebp); regs->ebp = v;
	GET(v, esp); regs->esp = v;
	GET(v, ebx); regs->ebx = v;
	GET(v, edx); regs->edx = v;
	GET(v, ecx); regs->ecx = v;
	GET(v, eip); regs->eip = v;
	/* only the arithmetic/status flags; IF, IOPL, VM... stay the kernel's */
	GET(eflags, eflags);
	regs->eflags = (regs->eflags & ~FIX_EFLAGS) | (eflags & FIX_EFLAGS);
	GET(mask, oldmask);
	current->blocked = mask & _BLOCKABLE;
	regs->orig_eax = -1;		/* not a system call any more */
	GET(v, eax);
	return v;			/* the syscall exit stores it in eax */

badframe:
	printk("%s[%d]: bad sigreturn frame at %08lx, killed\n",
	       current->comm, current->pid, (unsigned long)sc);
	do_exit(SIGSEGV);
}
#undef GET

/* sigaction (67), the old i386 form. */
asmlinkage long sys_sigaction(int sig, const struct old_sigaction *act,
			      struct old_sigaction *oact)
{
	struct k_sigaction new_ka, *k;
	struct old_sigaction old;

	if (sig < 1 || sig > NSIG)
		return -EINVAL;
	k = &current->sig->action[sig - 1];
	if (act) {
		/* the first failing load returns: one fault for a bad pointer */
		if (!access_ok(act, sizeof(*act)) ||
		    __get_user(new_ka.sa_handler, &act->sa_handler) ||
		    __get_user(new_ka.sa_mask, &act->sa_mask) ||
		    __get_user(new_ka.sa_flags, &act->sa_flags) ||
		    __get_user(new_ka.sa_restorer, &act->sa_restorer))
			return -EFAULT;
		if (sig == SIGKILL || sig == SIGSTOP)
			return -EINVAL;
	}
	old.sa_handler = k->sa_handler;
	old.sa_mask = k->sa_mask;
	old.sa_flags = k->sa_flags;
	old.sa_restorer = k->sa_restorer;
	if (act) {
		new_ka.sa_mask &= _BLOCKABLE;
		*k = new_ka;
		/* setting SIG_IGN discards a pending instance (POSIX) */
		if (k->sa_handler == SIG_IGN)
			current->signal &= ~sigmask(sig);
	}
	if (oact) {
		if (!access_ok(oact, sizeof(*oact)) ||
		    __put_user(old.sa_handler, &oact->sa_handler) ||
		    __put_user(old.sa_mask, &oact->sa_mask) ||
		    __put_user(old.sa_flags, &oact->sa_flags) ||
		    __put_user(old.sa_restorer, &oact->sa_restorer))
			return -EFAULT;
	}
	return 0;
}

asmlinkage long sys_sigprocmask(int how, const sigset_t *set, sigset_t *oset)
{
	sigset_t old = current->blocked, new;

	if (set) {
		if (get_user(new, set))
			return -EFAULT;
		new &= _BLOCKABLE;
		switch (how) {
		case SIG_BLOCK:
			current->blocked |= new;
			break;
		case SIG_UNBLOCK:
			current->blocked &= ~new;
			break;
		case SIG_SETMASK:
			current->blocked = new;
			break;
		default:
			return -EINVAL;
		}
	}
	if (oset && put_user(old, oset))
		return -EFAULT;
	return 0;
}

asmlinkage long sys_sigpending(sigset_t *set)
{
	if (put_user(current->signal & current->blocked, set))
		return -EFAULT;
	return 0;
}

asmlinkage long sys_sgetmask(void)
{
	return (long)current->blocked;
}

asmlinkage long sys_ssetmask(long newmask)
{
	long old = (long)current->blocked;
	current->blocked = (unsigned long)newmask & _BLOCKABLE;
	return old;
}

asmlinkage long sys_kill(int pid, int sig)
{
	/* one process: pid 1, 0 (our group) and -1 (everyone) all mean us */
	if (pid != current->pid && pid != 0 && pid != -1)
		return -ESRCH;
	return send_sig(sig, current, 0);
}
