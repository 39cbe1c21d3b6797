/*
 * mprotect.c - change the protection of a range of the address space.
 *
 * The range must be fully mapped.  Each area it touches is split where the
 * range begins or ends inside it, gets the new flags, and its present pages
 * get the new PTE protection; neighbours with equal flags are merged again
 * at the end, so mprotect(R) / mprotect(RW) cycles on one page leave the
 * area list as it was.
 *
 * As in 2.x, a private writable area's protection is PAGE_COPY, read-only:
 * after mprotect(RW) a present page stays read-only and the next store takes
 * a write fault that do_wp_page resolves.  That is the second page fault of
 * every iteration of the 1997 mprotect/SIGSEGV loop.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "errno.h"
#include "mm.h"
#include "sched.h"
#include "system.h"

void change_protection(struct mm_struct *mm, unsigned long start,
		       unsigned long end, unsigned long newprot)
{
	unsigned long addr;

	for (addr = start; addr < end; addr += PAGE_SIZE) {
		pte_t *pte = pte_lookup(mm->pgd, addr);
		if (!pte) {
			addr = (addr | ((1UL << PGDIR_SHIFT) - 1)) - PAGE_SIZE + 1;
			continue;
		}
		if (pte_present(*pte)) {
			*pte = (*pte & (PAGE_MASK | _PAGE_DIRTY)) | newprot;
			flush_tlb_one(addr);
		}
	}
}

/* Split off [vm_start, at) as its own area; vma keeps [at, vm_end). */
static int split_vma_before(struct mm_struct *mm, struct vm_area_struct *vma,
			    unsigned long at)
{
	struct vm_area_struct *head = vm_area_alloc();

	if (!head)
		return -ENOMEM;
	*head = *vma;
	head->vm_end = at;
	vma->vm_start = at;
	head->vm_next = NULL;
	insert_vm_struct(mm, head);
	return 0;
}

/* Split off [at, vm_end) as its own area; vma keeps [vm_start, at). */
static int split_vma_after(struct mm_struct *mm, struct vm_area_struct *vma,
			   unsigned long at)
{
	struct vm_area_struct *tail = vm_area_alloc();

	if (!tail)
		return -ENOMEM;
	*tail = *vma;
	tail->vm_start = at;
	vma->vm_end = at;
	tail->vm_next = NULL;
	insert_vm_struct(mm, tail);
	return 0;
}

static int mprotect_fixup(struct mm_struct *mm, struct vm_area_struct *vma,
			  unsigned long start, unsigned long end,
			  unsigned long newflags)
{
	unsigned long newprot;
	int err;

	if (newflags == vma->vm_flags)
		return 0;
	if (start > vma->vm_start) {
		err = split_vma_before(mm, vma, start);
		if (err)
			return err;
	}
	if (end < vma->vm_end) {
		err = split_vma_after(mm, vma, end);
		if (err)
			return err;
	}
	newprot = vm_get_page_prot(newflags);
	vma->vm_flags = newflags;
	vma->vm_page_prot = newprot;
	change_protection(mm, start, end, newprot);
	return 0;
}

asmlinkage long sys_mprotect(unsigned long start, size_t len, unsigned long prot)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma, *next;
	unsigned long end, nstart, newflags;
	int err = 0;

	if (start & ~PAGE_MASK)
		return -EINVAL;
	len = PAGE_ALIGN(len);
	end = start + len;
	if (end < start || end > TASK_SIZE)
		return -ENOMEM;
	if (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC))
		return -EINVAL;
	if (end == start)
		return 0;

	/* the whole range must be mapped, with no holes */
	vma = find_vma(mm, start);
	if (!vma || vma->vm_start > start)
		return -ENOMEM;
	for (next = vma, nstart = start; next->vm_end < end; ) {
		nstart = next->vm_end;
		next = next->vm_next;
		if (!next || next->vm_start != nstart)
			return -ENOMEM;
	}

	for (nstart = start; nstart < end; vma = next) {
		unsigned long tmp = min(end, vma->vm_end);
		next = vma->vm_next;
		newflags = (vma->vm_flags & ~VM_ACCESS) |
			   ((prot & PROT_READ) ? VM_READ : 0) |
			   ((prot & PROT_WRITE) ? VM_WRITE : 0) |
			   ((prot & PROT_EXEC) ? VM_EXEC : 0);
		err = mprotect_fixup(mm, vma, nstart, tmp, newflags);
		if (err)
			break;
		nstart = tmp;
		/* the split may have put a new area right after vma */
		next = vma->vm_next;
	}
	mm->mmap_cache = NULL;
	merge_segments(mm, start, end);
	return err;
}
