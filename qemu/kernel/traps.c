/*
 * traps.c - the exception vectors other than the page fault (fault.c), the
 * IDT set-up, and die(): the kernel's "Oops" report.
 *
 * As in 2.x, a CPU exception in user mode becomes a signal to the task
 * (with trap number and error code recorded in tsk->tss for the signal
 * frame), and the same exception in kernel mode is a kernel bug: die()
 * prints an Oops with a register dump and ends the run (QEMU exit status 29,
 * see qemu/README.md).
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "ptrace.h"
#include "sched.h"
#include "signal.h"
#include "segment.h"
#include "desc.h"
#include "system.h"
#include "uaccess.h"
#include "mm.h"
#include "traps.h"

/* entry.S must agree with these C layouts */
_Static_assert(offsetof(struct pt_regs, ebx) == PT_EBX, "pt_regs");
_Static_assert(offsetof(struct pt_regs, eax) == PT_EAX, "pt_regs");
_Static_assert(offsetof(struct pt_regs, xds) == PT_DS, "pt_regs");
_Static_assert(offsetof(struct pt_regs, orig_eax) == PT_ORIG_EAX, "pt_regs");
_Static_assert(offsetof(struct pt_regs, eip) == PT_EIP, "pt_regs");
_Static_assert(offsetof(struct pt_regs, xcs) == PT_CS, "pt_regs");
_Static_assert(offsetof(struct pt_regs, xss) == PT_OLDSS, "pt_regs");
_Static_assert(sizeof(struct pt_regs) == PT_SIZE, "pt_regs");
_Static_assert(offsetof(struct task_struct, state) == TSK_STATE, "task");
_Static_assert(offsetof(struct task_struct, signal) == TSK_SIGNAL, "task");
_Static_assert(offsetof(struct task_struct, blocked) == TSK_BLOCKED, "task");

/* entry points in entry.S */
extern void divide_error(void), debug(void), nmi(void), int3(void),
	overflow(void), bounds(void), invalid_op(void),
	device_not_available(void), double_fault(void),
	coprocessor_segment_overrun(void), invalid_TSS(void),
	segment_not_present(void), stack_segment(void),
	general_protection(void), page_fault(void),
	spurious_interrupt_bug(void), coprocessor_error(void),
	alignment_check(void), machine_check(void),
	simd_coprocessor_error(void), reserved_exception(void),
	system_call(void);

extern char _text[], _etext[];

static int die_nesting;

void show_regs(struct pt_regs *regs)
{
	unsigned long esp, ss;

	if (user_mode(regs)) {
		esp = regs->esp;
		ss = regs->xss & 0xffff;
	} else {
		/* the CPU pushed no esp/ss: the old stack is right above eip..eflags */
		esp = (unsigned long)&regs->esp;
		ss = __KERNEL_DS;
	}
	printk("CPU:    0\n");
	printk("EIP:    %04x:[<%08lx>]\n", regs->xcs & 0xffff, regs->eip);
	printk("EFLAGS: %08lx\n", regs->eflags);
	printk("eax: %08lx   ebx: %08lx   ecx: %08lx   edx: %08lx\n",
	       regs->eax, regs->ebx, regs->ecx, regs->edx);
	printk("esi: %08lx   edi: %08lx   ebp: %08lx   esp: %08lx\n",
	       regs->esi, regs->edi, regs->ebp, esp);
	printk("ds: %04x   es: %04x   ss: %04lx\n",
	       regs->xds & 0xffff, regs->xes & 0xffff, ss);
	printk("cr2: %08lx   cr3: %08lx\n", read_cr2(), read_cr3());
}

static void show_stack_and_code(struct pt_regs *regs)
{
	unsigned long *sp = (unsigned long *)&regs->esp;
	unsigned long *stack_top =
		(unsigned long *)((char *)&init_task_union + KERNEL_STACK_SIZE);
	int i;

	if (user_mode(regs))
		return;
	printk("Stack:");
	for (i = 0; i < 24 && sp + i < stack_top; i++)
		printk("%s%08lx", (i && (i % 8) == 0) ? "\n       " : " ", sp[i]);
	printk("\nCall Trace:");
	for (i = 0; sp + i < stack_top; i++) {
		unsigned long v = sp[i];
		if (v >= (unsigned long)_text && v < (unsigned long)_etext)
			printk(" [<%08lx>]", v);
	}
	printk("\nCode:");
	if ((unsigned long)regs->eip >= (unsigned long)_text &&
	    (unsigned long)regs->eip + 16 <= (unsigned long)_etext) {
		for (i = 0; i < 16; i++)
			printk(" %02x", ((unsigned char *)regs->eip)[i]);
	} else {
		printk(" <eip outside kernel text>");
	}
	printk("\n");
}

/*
 * The end of a kernel bug: the "Oops:" line, registers, stack, code bytes,
 * then leave QEMU with status 29 (isa-debug-exit value 0x0e).
 */
__noreturn void die(const char *str, struct pt_regs *regs, long err)
{
	cli();
	if (die_nesting++) {
		printk("Oops: recursive fault while dying\n");
		qemu_exit(0x0e);
	}
	printk("%s: %04lx\n", str, err & 0xffff);
	show_regs(regs);
	printk("Process %s (pid: %d, stackpage=%08lx)\n", current->comm, current->pid,
	       (unsigned long)&init_task_union);
	show_stack_and_code(regs);
	qemu_exit(0x0e);
}

/* A user-mode exception becomes a signal; a kernel-mode one is an Oops. */
static void do_trap(int trapnr, int signr, const char *str,
		    struct pt_regs *regs, long error_code)
{
	struct task_struct *tsk = current;

	if (user_mode(regs)) {
		tsk->tss.error_code = error_code;
		tsk->tss.trap_no = trapnr;
		force_sig(signr, tsk);
		return;
	}
	printk("%s in kernel mode (trap %d)\n", str, trapnr);
	die("Oops", regs, error_code);
}

#define DO_TRAP(trapnr, signr, str, name)				\
asmlinkage void do_##name(struct pt_regs *regs, long error_code)	\
{									\
	do_trap(trapnr, signr, str, regs, error_code);			\
}

DO_TRAP( 0, SIGFPE,  "divide error", divide_error)
DO_TRAP( 1, SIGTRAP, "debug", debug)
DO_TRAP( 3, SIGTRAP, "int3", int3)
DO_TRAP( 4, SIGSEGV, "overflow", overflow)
DO_TRAP( 5, SIGSEGV, "bounds", bounds)
DO_TRAP( 6, SIGILL,  "invalid operand", invalid_op)
DO_TRAP( 8, SIGSEGV, "double fault", double_fault)
DO_TRAP( 9, SIGFPE,  "coprocessor segment overrun", coprocessor_segment_overrun)
DO_TRAP(10, SIGSEGV, "invalid TSS", invalid_TSS)
DO_TRAP(11, SIGBUS,  "segment not present", segment_not_present)
DO_TRAP(12, SIGBUS,  "stack segment", stack_segment)
DO_TRAP(16, SIGFPE,  "coprocessor error", coprocessor_error)
DO_TRAP(17, SIGBUS,  "alignment check", alignment_check)
DO_TRAP(18, SIGBUS,  "machine check", machine_check)
DO_TRAP(19, SIGFPE,  "SIMD coprocessor error", simd_coprocessor_error)
DO_TRAP(15, SIGSEGV, "reserved trap", reserved)

/*
 * General protection: in user mode a SIGSEGV; in kernel mode a user access
 * primitive could in principle get here (a non-canonical segment, say), so
 * like 2.x we look for a fixup before we die.
 */
asmlinkage void do_general_protection(struct pt_regs *regs, long error_code)
{
	unsigned long fixup;

	if (user_mode(regs)) {
		current->tss.error_code = error_code;
		current->tss.trap_no = 13;
		force_sig(SIGSEGV, current);
		return;
	}
	fixup = search_exception_table(regs->eip);
	if (fixup) {
		regs->eip = fixup;
		return;
	}
	printk("general protection fault in kernel mode\n");
	die("Oops", regs, error_code);
}

asmlinkage void do_nmi(struct pt_regs *regs, long error_code)
{
	(void)regs;
	(void)error_code;
	printk("NMI received, ignored\n");
}

/* We never set CR0.TS, so this only happens if the FPU was never set up. */
asmlinkage void do_device_not_available(struct pt_regs *regs, long error_code)
{
	(void)error_code;
	if (!user_mode(regs))
		die("Oops", regs, 0);
	__asm__ __volatile__("clts");
}

asmlinkage void do_spurious_interrupt_bug(struct pt_regs *regs, long error_code)
{
	(void)regs;
	(void)error_code;
}

/*
 * The FPU belongs to the one user process, so it is never saved or switched:
 * clear EM/TS, enable native error reporting, and tell the CPU we handle
 * FXSAVE/SSE state if it has them (user code may use SSE).
 */
static void fpu_init(void)
{
	u32 a, b, c, d;
	unsigned long cr0 = read_cr0();

	cr0 &= ~(0x4UL | 0x8UL);	/* EM, TS */
	cr0 |= 0x2UL | 0x20UL;		/* MP, NE */
	write_cr0(cr0);
	__asm__ __volatile__("fninit");
	cpuid(1, &a, &b, &c, &d);
	if (d & (1 << 24)) {
		unsigned long cr4 = read_cr4() | (1UL << 9);	/* OSFXSR */
		if (d & (1 << 25))
			cr4 |= 1UL << 10;			/* OSXMMEXCPT */
		write_cr4(cr4);
	}
}

void trap_init(void)
{
	int i;

	gdt_init();

	set_trap_gate(0, divide_error);
	set_trap_gate(1, debug);
	set_intr_gate(2, nmi);
	set_system_gate(3, int3);	/* int3, into and bound work from user mode */
	set_system_gate(4, overflow);
	set_system_gate(5, bounds);
	set_trap_gate(6, invalid_op);
	set_trap_gate(7, device_not_available);
	set_trap_gate(8, double_fault);
	set_trap_gate(9, coprocessor_segment_overrun);
	set_trap_gate(10, invalid_TSS);
	set_trap_gate(11, segment_not_present);
	set_trap_gate(12, stack_segment);
	set_trap_gate(13, general_protection);
	set_trap_gate(14, page_fault);
	set_trap_gate(15, spurious_interrupt_bug);
	set_trap_gate(16, coprocessor_error);
	set_trap_gate(17, alignment_check);
	set_trap_gate(18, machine_check);
	set_trap_gate(19, simd_coprocessor_error);
	for (i = 20; i < 32; i++)
		set_trap_gate(i, reserved_exception);
	set_system_gate(0x80, system_call);
	idt_load();
	fpu_init();
}
