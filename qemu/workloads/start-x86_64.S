/* Entry point and signal glue for the gdbfault workloads (Linux x86_64 ABI,
 * `syscall`).  The i386 twin is start.S. */
	.section .text.start,"ax"
	.globl	_start
	.type	_start,@function
/* Linux x86_64 initial stack: argc, argv[0..argc-1], NULL, envp..., NULL, auxv. */
_start:
	xorl	%ebp,%ebp
	movq	(%rsp),%rdi		/* argc */
	leaq	8(%rsp),%rsi		/* argv */
	leaq	16(%rsp,%rdi,8),%rdx	/* envp = argv + argc + 1 */
	andq	$-16,%rsp		/* the ABI's alignment at a call */
	call	rt_main			/* never returns */
	movl	$60,%eax		/* exit(127), just in case */
	movl	$127,%edi
	syscall
	hlt
	.size	_start,.-_start

	.text
/* SIGSEGV handler entry.  x86_64 always builds an rt signal frame: at entry
 * (%rsp) is pretcode (our restorer), then struct ucontext, whose uc_mcontext
 * (struct sigcontext) lies 40 bytes in; the kernel passes sig in %rdi,
 * &siginfo in %rsi and &ucontext in %rdx, with %rsp = 8 mod 16 as after a
 * call.  C gets (sig, &sc). */
	.globl	rt_segv_entry
	.type	rt_segv_entry,@function
rt_segv_entry:
	leaq	40(%rdx),%rsi		/* &uc->uc_mcontext */
	subq	$8,%rsp			/* keep the callee's alignment */
	call	rt_segv_handler
	addq	$8,%rsp
	ret				/* pops pretcode: into rt_restorer */
	.size	rt_segv_entry,.-rt_segv_entry

/* SA_RESTORER trampoline, as glibc's __restore_rt: rt_sigreturn (15) with
 * %rsp at the frame's ucontext (the kernel finds the frame at rsp - 8). */
	.globl	rt_restorer
	.type	rt_restorer,@function
rt_restorer:
	movq	$15,%rax
	syscall
	hlt
	.size	rt_restorer,.-rt_restorer

	.section .note.GNU-stack,"",@progbits
