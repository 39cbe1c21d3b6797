/*
 * entry.S - every way into the kernel: exceptions, hardware interrupts and
 * the int $0x80 system call, and the common way out.
 *
 * Each entry builds a struct pt_regs (ptrace.h) on the kernel stack with
 * SAVE_ALL and calls C with a pointer to it.  All of them leave through
 * ret_from_sys_call / ret_from_exception / ret_from_intr, which, when going
 * back to user mode, delivers pending unblocked signals (do_signal) before
 * the iret.  That is where a SIGSEGV raised by do_page_fault's force_sig
 * turns into a signal frame on the user stack.
 */
#include "ptrace.h"
#include "segment.h"
#include "sched.h"
#include "errno.h"
#include "unistd.h"

.macro SAVE_ALL
	cld
	pushl %gs
	pushl %fs
	pushl %es
	pushl %ds
	pushl %eax
	pushl %ebp
	pushl %edi
	pushl %esi
	pushl %edx
	pushl %ecx
	pushl %ebx
	movl $__KERNEL_DS, %edx
	movl %edx, %ds
	movl %edx, %es
.endm

.macro RESTORE_ALL
	popl %ebx
	popl %ecx
	popl %edx
	popl %esi
	popl %edi
	popl %ebp
	popl %eax
	popl %ds
	popl %es
	popl %fs
	popl %gs
	addl $4, %esp		/* orig_eax */
	iret
.endm

	.text

/* ---------------------------------------------------------------------
 * System call: int $0x80, number in %eax, arguments in %ebx %ecx %edx
 * %esi %edi %ebp, result (or -errno) back in %eax.
 */
	.globl system_call
	.type system_call, @function
system_call:
	pushl %eax			/* orig_eax = system call number */
	SAVE_ALL
	cmpl $0, labtest_oops		/* labtest=oops: fault at the first call */
	jne 3f
1:	cmpl $NR_syscalls, %eax
	jae badsys
	/* call fn(ebx, ecx, edx, esi, edi, ebp, regs) with copies of the
	 * arguments, so C is free to scribble on its own argument slots */
	movl %esp, %edx
	pushl %edx
	pushl PT_EBP(%edx)
	pushl PT_EDI(%edx)
	pushl PT_ESI(%edx)
	pushl PT_EDX(%edx)
	pushl PT_ECX(%edx)
	pushl PT_EBX(%edx)
	call *sys_call_table(,%eax,4)
	addl $28, %esp
	movl %eax, PT_EAX(%esp)
	jmp ret_from_sys_call
3:	call lab_trigger_oops		/* does not return */
	jmp 1b
badsys:
	movl $-ENOSYS, PT_EAX(%esp)
	/* fall through */

/* ---------------------------------------------------------------------
 * The common way out.  Back to kernel mode: just restore.  Back to user
 * mode: with interrupts off (so nothing can be raised between the test and
 * the iret), check for pending unblocked signals and set up a handler frame.
 */
	.globl ret_from_sys_call, ret_from_exception, ret_from_intr, restore_all
ret_from_sys_call:
ret_from_exception:
ret_from_intr:
	testl $3, PT_CS(%esp)
	jz restore_all
/* Back to user mode: 2.x's ret_with_reschedule (where 2.1 also checked
 * need_resched; this kernel runs one process and never reschedules).  A
 * label only, so that profiles name this part as readprofile did in 1997. */
ret_with_reschedule:
	cli
	movl current, %ebx
	movl TSK_BLOCKED(%ebx), %ecx
	notl %ecx
	andl TSK_SIGNAL(%ebx), %ecx
	jnz signal_return
restore_all:
	RESTORE_ALL

signal_return:
	sti
	movl %esp, %eax
	pushl %eax
	call do_signal			/* do_signal(regs) */
	addl $4, %esp
	cli
	jmp restore_all

/* ---------------------------------------------------------------------
 * Exceptions.  Those without a CPU error code push 0 in its place so every
 * frame looks the same; the handler gets (regs, error_code) and orig_eax
 * becomes -1 (not a system call).
 */
.macro EXCEPTION name, handler, has_error_code
	.globl \name
	.type \name, @function
\name:
	.if \has_error_code == 0
	pushl $0
	.endif
	SAVE_ALL
	movl %esp, %ebx
	movl PT_ORIG_EAX(%ebx), %eax
	movl $-1, PT_ORIG_EAX(%ebx)
	pushl %eax			/* error_code */
	pushl %ebx			/* regs */
	call \handler
	addl $8, %esp
	jmp ret_from_exception
.endm

EXCEPTION divide_error,                do_divide_error,                0
EXCEPTION debug,                       do_debug,                       0
EXCEPTION nmi,                         do_nmi,                         0
EXCEPTION int3,                        do_int3,                        0
EXCEPTION overflow,                    do_overflow,                    0
EXCEPTION bounds,                      do_bounds,                      0
EXCEPTION invalid_op,                  do_invalid_op,                  0
EXCEPTION device_not_available,        do_device_not_available,        0
EXCEPTION double_fault,                do_double_fault,                1
EXCEPTION coprocessor_segment_overrun, do_coprocessor_segment_overrun, 0
EXCEPTION invalid_TSS,                 do_invalid_TSS,                 1
EXCEPTION segment_not_present,         do_segment_not_present,         1
EXCEPTION stack_segment,               do_stack_segment,               1
EXCEPTION general_protection,          do_general_protection,          1
EXCEPTION page_fault,                  do_page_fault,                  1
EXCEPTION spurious_interrupt_bug,      do_spurious_interrupt_bug,      0
EXCEPTION coprocessor_error,           do_coprocessor_error,           0
EXCEPTION alignment_check,             do_alignment_check,             1
EXCEPTION machine_check,               do_machine_check,               0
EXCEPTION simd_coprocessor_error,      do_simd_coprocessor_error,      0
EXCEPTION reserved_exception,          do_reserved,                    0

/* ---------------------------------------------------------------------
 * Hardware interrupts 0-15 (the PICs are remapped to vectors 0x20-0x2f).
 * orig_eax = ~irq, as in 2.x.  C gets do_IRQ(irq, regs).
 */
.macro IRQ_ENTRY n
	.globl irq\n\()_interrupt
irq\n\()_interrupt:
	pushl $~\n
	SAVE_ALL
	movl %esp, %eax
	pushl %eax
	pushl $\n
	call do_IRQ
	addl $8, %esp
	jmp ret_from_intr
.endm

IRQ_ENTRY 0
IRQ_ENTRY 1
IRQ_ENTRY 2
IRQ_ENTRY 3
IRQ_ENTRY 4
IRQ_ENTRY 5
IRQ_ENTRY 6
IRQ_ENTRY 7
IRQ_ENTRY 8
IRQ_ENTRY 9
IRQ_ENTRY 10
IRQ_ENTRY 11
IRQ_ENTRY 12
IRQ_ENTRY 13
IRQ_ENTRY 14
IRQ_ENTRY 15

	.section .rodata
	.balign 4
	.globl irq_entries
irq_entries:
	.long irq0_interrupt, irq1_interrupt, irq2_interrupt, irq3_interrupt
	.long irq4_interrupt, irq5_interrupt, irq6_interrupt, irq7_interrupt
	.long irq8_interrupt, irq9_interrupt, irq10_interrupt, irq11_interrupt
	.long irq12_interrupt, irq13_interrupt, irq14_interrupt, irq15_interrupt

	.text
/* ---------------------------------------------------------------------
 * First entry into user mode: %esp points at a prepared pt_regs (see
 * start_thread in exec.c); leave the way every system call does.
 */
	.globl ret_to_user
ret_to_user:
	movl 4(%esp), %esp
	jmp ret_from_sys_call

	.section .note.GNU-stack, "", @progbits
