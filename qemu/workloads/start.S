/* Entry point and signal glue for the gdbfault workloads (Linux i386 ABI). */
	.section .text.start,"ax"
	.globl	_start
	.type	_start,@function
/* Linux i386 initial stack: argc, argv[0..argc-1], NULL, envp..., NULL, auxv. */
_start:
	xorl	%ebp,%ebp
	movl	(%esp),%eax		/* argc */
	leal	4(%esp),%edx		/* argv */
	leal	8(%esp,%eax,4),%ecx	/* envp = argv + argc + 1 */
	andl	$-16,%esp
	subl	$4,%esp
	pushl	%ecx
	pushl	%edx
	pushl	%eax
	call	rt_main			/* never returns */
	movl	$1,%eax			/* exit(127), just in case */
	movl	$127,%ebx
	int	$0x80
	hlt
	.size	_start,.-_start

	.text
/* Old-style (non-SA_SIGINFO) SIGSEGV handler entry.  The kernel's sigframe
 * is: pretcode (our restorer), sig, struct sigcontext sc, ...  We never let C
 * code own that frame (a compiler may reuse incoming argument slots, which
 * here are the registers sigreturn restores); C gets (sig, &sc). */
	.globl	rt_segv_entry
	.type	rt_segv_entry,@function
rt_segv_entry:
	leal	8(%esp),%eax		/* &sc */
	pushl	%eax
	pushl	8(%esp)			/* sig (was at 4(%esp)) */
	call	rt_segv_handler
	addl	$8,%esp
	ret				/* pops pretcode: into rt_restorer */
	.size	rt_segv_entry,.-rt_segv_entry

/* SA_RESTORER trampoline, identical to the retcode Linux i386 has always put
 * in the signal frame: drop sig, then sigreturn (119).  The kernel finds the
 * frame at esp - 8. */
	.globl	rt_restorer
	.type	rt_restorer,@function
rt_restorer:
	popl	%eax
	movl	$119,%eax
	int	$0x80
	hlt
	.size	rt_restorer,.-rt_restorer

	.section .note.GNU-stack,"",@progbits
