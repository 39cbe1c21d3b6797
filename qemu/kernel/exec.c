/*
 * exec.c - start init: load a static ELF32 executable (multiboot module 0)
 * into a fresh address space and build the Linux i386 initial stack.
 *
 * Everything is mapped eagerly -- every PT_LOAD page and a 64 KiB stack --
 * with the protection the program asked for, so init takes no page fault
 * that it did not cause itself (qemu/README.md relies on this for its
 * ground-truth counts).
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "errno.h"
#include "elf.h"
#include "mm.h"
#include "ptrace.h"
#include "sched.h"
#include "segment.h"
#include "string.h"
#include "system.h"
#include "uaccess.h"
#include "desc.h"
#include "exec.h"

static unsigned long elf_vm_flags(u32 p_flags)
{
	return ((p_flags & PF_R) ? VM_READ : 0) | ((p_flags & PF_W) ? VM_WRITE : 0) |
	       ((p_flags & PF_X) ? VM_EXEC : 0) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC;
}

/* PTE bits for an eagerly mapped page: writable at once if the segment is. */
static unsigned long eager_prot(unsigned long vm_flags)
{
	if (vm_flags & VM_WRITE)
		return PAGE_SHARED | _PAGE_DIRTY;
	return PAGE_READONLY;
}

/* Add [start, end) as an area; a page shared with the previous segment
 * (text and data in one page) stays in the earlier area, which then gets
 * both segments' permissions. */
static int add_segment_vma(struct mm_struct *mm, unsigned long start,
			   unsigned long end, unsigned long flags)
{
	struct vm_area_struct *vma, *prev = find_vma_intersection(mm, start, end);

	if (prev) {
		if (prev->vm_start > start || prev->vm_end > start + PAGE_SIZE)
			return -ENOEXEC;	/* overlaps more than one shared page */
		prev->vm_flags |= flags;
		prev->vm_page_prot = vm_get_page_prot(prev->vm_flags);
		start = prev->vm_end;
		if (start >= end)
			return 0;
	}
	vma = vm_area_alloc();
	if (!vma)
		return -ENOMEM;
	vma->vm_start = start;
	vma->vm_end = end;
	vma->vm_flags = flags;
	vma->vm_page_prot = vm_get_page_prot(flags);
	insert_vm_struct(mm, vma);
	return 0;
}

static int load_segment(struct mm_struct *mm, const u8 *image, const Elf32_Phdr *ph)
{
	unsigned long start = ph->p_vaddr & PAGE_MASK;
	unsigned long end = PAGE_ALIGN(ph->p_vaddr + ph->p_memsz);
	unsigned long flags = elf_vm_flags(ph->p_flags);
	unsigned long addr, copied = 0;
	int err;

	err = add_segment_vma(mm, start, end, flags);
	if (err)
		return err;
	for (addr = start; addr < end; addr += PAGE_SIZE) {
		unsigned long kaddr, from, to;
		if (map_user_page(mm, addr, eager_prot(flags), &kaddr))
			return -ENOMEM;
		/* the part of the file image that falls in this page */
		from = max(addr, (unsigned long)ph->p_vaddr);
		to = min(addr + PAGE_SIZE, (unsigned long)ph->p_vaddr + ph->p_filesz);
		if (from < to) {
			memcpy((void *)(kaddr + (from - addr)),
			       image + ph->p_offset + (from - ph->p_vaddr), to - from);
			copied += to - from;
		}
	}
	/* Zero the rest of the last file page (bss start) through the user
	 * mapping, as 2.x's padzero did: a page shared with another segment
	 * may hold stale bytes there. */
	if ((flags & VM_WRITE) && ph->p_memsz > ph->p_filesz) {
		unsigned long bss = ph->p_vaddr + ph->p_filesz;
		unsigned long n = min(PAGE_ALIGN(bss), ph->p_vaddr + ph->p_memsz) - bss;
		if (n && clear_user((void *)bss, n))
			return -EFAULT;
	}
	(void)copied;
	return 0;
}

/*
 * The initial stack, top down: the strings, then (16-byte aligned at argc)
 *	argc, argv[0..argc-1], NULL, envp[0..envc-1], NULL, AT_NULL, 0
 */
static int setup_stack(struct mm_struct *mm, char **argv, int argc,
		       char **envp, int envc, unsigned long *sp_out)
{
	struct vm_area_struct *vma;
	unsigned long addr, p = STACK_TOP, sp, *ptrs;
	unsigned long argp[MAX_INIT_ARGS + 1], envpp[MAX_INIT_ENVS + 1];
	int i, words;

	vma = vm_area_alloc();
	if (!vma)
		return -ENOMEM;
	vma->vm_start = STACK_TOP - STACK_SIZE;
	vma->vm_end = STACK_TOP;
	vma->vm_flags = VM_READ | VM_WRITE | VM_EXEC | VM_GROWSDOWN |
			VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC;
	vma->vm_page_prot = vm_get_page_prot(vma->vm_flags);
	insert_vm_struct(mm, vma);
	for (addr = vma->vm_start; addr < vma->vm_end; addr += PAGE_SIZE) {
		unsigned long kaddr;
		if (map_user_page(mm, addr, PAGE_SHARED | _PAGE_DIRTY, &kaddr))
			return -ENOMEM;
	}

	p -= sizeof(long);			/* a NULL word at the very top */
	for (i = envc - 1; i >= 0; i--) {
		size_t len = strlen(envp[i]) + 1;
		p -= len;
		if (copy_to_user((void *)p, envp[i], len))
			return -EFAULT;
		envpp[i] = p;
	}
	mm->env_start = p;
	for (i = argc - 1; i >= 0; i--) {
		size_t len = strlen(argv[i]) + 1;
		p -= len;
		if (copy_to_user((void *)p, argv[i], len))
			return -EFAULT;
		argp[i] = p;
	}
	mm->arg_start = p;
	mm->arg_end = mm->env_start;
	mm->env_end = STACK_TOP - sizeof(long);

	words = 1 + argc + 1 + envc + 1 + 2;
	sp = (p - words * sizeof(long)) & ~15UL;
	ptrs = (unsigned long *)sp;
	if (put_user((unsigned long)argc, ptrs++))
		return -EFAULT;
	for (i = 0; i < argc; i++)
		if (put_user(argp[i], ptrs++))
			return -EFAULT;
	if (put_user(0UL, ptrs++))
		return -EFAULT;
	for (i = 0; i < envc; i++)
		if (put_user(envpp[i], ptrs++))
			return -EFAULT;
	if (put_user(0UL, ptrs++) || put_user((unsigned long)AT_NULL, ptrs++) ||
	    put_user(0UL, ptrs++))
		return -EFAULT;
	mm->start_stack = sp;
	*sp_out = sp;
	return 0;
}

/*
 * Build init's address space from the ELF image and return its entry point
 * and initial stack pointer.  The new page directory is loaded first, so the
 * stack can be written through the user mapping with copy_to_user.
 */
int exec_init(struct task_struct *tsk, const void *image, unsigned long size,
	      char **argv, int argc, char **envp, int envc,
	      unsigned long *entry, unsigned long *sp)
{
	const Elf32_Ehdr *eh = image;
	const Elf32_Phdr *ph;
	struct mm_struct *mm;
	unsigned long brk = 0;
	int i, err, loads = 0;

	if (size < sizeof(*eh) || memcmp(eh->e_ident, "\177ELF", 4) ||
	    eh->e_ident[4] != ELFCLASS32 || eh->e_ident[5] != ELFDATA2LSB ||
	    eh->e_type != ET_EXEC || eh->e_machine != EM_386 ||
	    eh->e_phentsize != sizeof(Elf32_Phdr) ||
	    eh->e_phoff > size || eh->e_phnum > (size - eh->e_phoff) / sizeof(Elf32_Phdr))
		return -ENOEXEC;

	mm = mm_alloc();
	if (!mm)
		return -ENOMEM;
	tsk->mm = mm;
	write_cr3(__pa(mm->pgd));

	mm->start_code = ~0UL;
	ph = (const Elf32_Phdr *)((const u8 *)image + eh->e_phoff);
	for (i = 0; i < eh->e_phnum; i++, ph++) {
		unsigned long seg_end;
		if (ph->p_type != PT_LOAD || !ph->p_memsz)
			continue;
		if (ph->p_filesz > ph->p_memsz || ph->p_offset > size ||
		    ph->p_filesz > size - ph->p_offset ||
		    ph->p_vaddr >= TASK_SIZE || ph->p_memsz > TASK_SIZE - ph->p_vaddr ||
		    PAGE_ALIGN(ph->p_vaddr + ph->p_memsz) > STACK_TOP - STACK_LIMIT)
			return -ENOEXEC;
		err = load_segment(mm, image, ph);
		if (err)
			return err;
		loads++;
		seg_end = ph->p_vaddr + ph->p_memsz;
		if (ph->p_flags & PF_X) {
			mm->start_code = min(mm->start_code, (unsigned long)ph->p_vaddr);
			mm->end_code = max(mm->end_code, ph->p_vaddr + ph->p_filesz);
		} else {
			if (!mm->start_data)
				mm->start_data = ph->p_vaddr;
			mm->end_data = max(mm->end_data, ph->p_vaddr + ph->p_filesz);
		}
		brk = max(brk, seg_end);
	}
	if (!loads)
		return -ENOEXEC;
	mm->start_brk = mm->brk = PAGE_ALIGN(brk);

	err = setup_stack(mm, argv, argc, envp, envc, sp);
	if (err)
		return err;
	*entry = eh->e_entry;
	return 0;
}

/*
 * The register frame init starts from, at the top of its kernel stack:
 * user segments, interrupts on, everything else zero (the ELF ABI's %edx=0
 * means "no atexit function").
 */
struct pt_regs *start_thread(struct task_struct *tsk, unsigned long eip,
			     unsigned long esp)
{
	unsigned long stack_top = (unsigned long)tsk + KERNEL_STACK_SIZE;
	struct pt_regs *regs = (struct pt_regs *)(stack_top - sizeof(struct pt_regs));

	memset(regs, 0, sizeof(*regs));
	regs->xds = __USER_DS;
	regs->xes = __USER_DS;
	regs->xfs = 0;
	regs->xgs = 0;
	regs->orig_eax = -1;
	regs->eip = eip;
	regs->xcs = __USER_CS;
	regs->eflags = 0x202;		/* IF */
	regs->esp = esp;
	regs->xss = __USER_DS;
	tsk->tss.esp0 = stack_top;
	set_tss_esp0(stack_top);
	return regs;
}
