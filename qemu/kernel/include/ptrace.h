/*
 * The register frame every kernel entry builds on the kernel stack.
 *
 * Layout, lowest address first, matching SAVE_ALL in entry.S: the general
 * registers (ebx first, so a system call's arguments sit in cdecl order),
 * the four data segment registers, orig_eax (the system call number, the
 * CPU's error code while an exception is being entered, or -1), then the
 * frame the CPU pushed itself.  The PT_* offsets are used by entry.S; a
 * static assertion in traps.c keeps the two in step.
 */
#ifndef _LAB_PTRACE_H
#define _LAB_PTRACE_H

#define PT_EBX       0
#define PT_ECX       4
#define PT_EDX       8
#define PT_ESI      12
#define PT_EDI      16
#define PT_EBP      20
#define PT_EAX      24
#define PT_DS       28
#define PT_ES       32
#define PT_FS       36
#define PT_GS       40
#define PT_ORIG_EAX 44
#define PT_EIP      48
#define PT_CS       52
#define PT_EFLAGS   56
#define PT_OLDESP   60
#define PT_OLDSS    64
#define PT_SIZE     68

#ifndef __ASSEMBLER__
struct pt_regs {
	long ebx;
	long ecx;
	long edx;
	long esi;
	long edi;
	long ebp;
	long eax;
	int xds;
	int xes;
	int xfs;
	int xgs;
	long orig_eax;
	long eip;
	int xcs;
	long eflags;
	long esp;		/* only valid when coming from user mode */
	int xss;		/* likewise */
};

/* The privilege level of the interrupted code decides user vs kernel. */
#define user_mode(regs) (((regs)->xcs & 3) == 3)

void show_regs(struct pt_regs *regs);
#endif

#endif
