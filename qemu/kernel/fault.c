/*
 * fault.c - the page fault handler (vector 14), modelled on the 1997 i386
 * do_page_fault.
 *
 * The CPU gives us the faulting address in %cr2 and an error code:
 *	bit 0: 0 = page not present, 1 = protection violation
 *	bit 1: 0 = read, 1 = write
 *	bit 2: 0 = kernel mode, 1 = user mode
 *
 * An access the vm area allows goes to handle_mm_fault.  Anything else is a
 * "bad area".  In this (vanilla, pre-June-1997) order, every bad-area fault
 * first searches the exception tables for a fixup -- even a user-mode fault,
 * whose eip can never be in the kernel's tables -- and only then, if the
 * fault came from user mode, sends SIGSEGV.  patches/0001 moves the user-mode
 * test ahead of the search, as the 1997 patch did.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "ptrace.h"
#include "sched.h"
#include "signal.h"
#include "mm.h"
#include "system.h"
#include "uaccess.h"
#include "traps.h"

asmlinkage void __probe do_page_fault(struct pt_regs *regs, unsigned long error_code)
{
	struct task_struct *tsk = current;
	struct mm_struct *mm = tsk->mm;
	struct vm_area_struct *vma;
	unsigned long address;
	unsigned long fixup;
	int write;

	/* get the address */
	address = read_cr2();

	vma = find_vma(mm, address);
	if (!vma)
		goto bad_area;
	if (vma->vm_start <= address)
		goto good_area;
	if (!(vma->vm_flags & VM_GROWSDOWN))
		goto bad_area;
	if (error_code & 4) {
		/*
		 * Accessing the stack below %esp is always a bug; allow a
		 * little slack for "enter" and "pusha", which touch the stack
		 * before moving %esp.
		 */
		if (address + 32 < (unsigned long)regs->esp)
			goto bad_area;
	}
	if (expand_stack(vma, address))
		goto bad_area;

/*
 * Ok, we have a good vm_area for this memory access, so we can handle it.
 */
good_area:
	write = 0;
	switch (error_code & 3) {
	default:	/* 3: write, present */
		/* fall through */
	case 2:		/* write, not present */
		if (!(vma->vm_flags & VM_WRITE))
			goto bad_area;
		write++;
		break;
	case 1:		/* read, present: a protection fault */
		goto bad_area;
	case 0:		/* read, not present */
		if (!(vma->vm_flags & (VM_READ | VM_EXEC)))
			goto bad_area;
	}
	if (handle_mm_fault(tsk, vma, address, write) < 0)
		goto out_of_memory;
	return;

/*
 * Something tried to access memory that isn't in our memory map.
 */
bad_area:
	/* Are we prepared to handle this fault? */
	if ((fixup = search_exception_table(regs->eip)) != 0) {
		regs->eip = fixup;
		return;
	}

	/* User mode accesses just cause a SIGSEGV */
	if (error_code & 4) {
		tsk->tss.cr2 = address;
		tsk->tss.error_code = error_code;
		tsk->tss.trap_no = 14;
		force_sig(SIGSEGV, tsk);
		return;
	}

/*
 * Oops. The kernel tried to access some bad page. We'll have to terminate
 * things with extreme prejudice.
 */
	if (address < PAGE_SIZE)
		printk("Unable to handle kernel NULL pointer dereference");
	else
		printk("Unable to handle kernel paging request");
	printk(" at virtual address %08lx\n", address);
	if (mm) {
		pgd_t pde = mm->pgd[pgd_index(address)];
		printk("*pde = %08lx\n", pde);
		if (pgd_present(pde))
			printk("*pte = %08lx\n", pgd_table(pde)[pte_index(address)]);
	}
	die("Oops", regs, error_code);

out_of_memory:
	printk("VM: out of memory, killing %s\n", tsk->comm);
	do_exit(SIGKILL);
}
