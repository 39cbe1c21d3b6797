/*
 * mmap.c - vm areas: lookup, insertion, merging, mmap, munmap, brk.
 *
 * Each mm has a list of vm_area_structs sorted by address, non-overlapping,
 * and a one-entry cache of the last lookup (2.2's mmap_cache): a fault loop
 * on one page hits the cache every time.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "errno.h"
#include "mm.h"
#include "sched.h"
#include "uaccess.h"

static struct kmem_cache vm_area_cachep;
static struct kmem_cache mm_cachep;

void mmap_init(void)
{
	kmem_cache_init(&vm_area_cachep, "vm_area_struct", sizeof(struct vm_area_struct));
	kmem_cache_init(&mm_cachep, "mm_struct", sizeof(struct mm_struct));
}

struct vm_area_struct *vm_area_alloc(void)
{
	return kmem_cache_alloc(&vm_area_cachep);
}

void vm_area_free(struct vm_area_struct *vma)
{
	if (vma->vm_mm && vma->vm_mm->mmap_cache == vma)
		vma->vm_mm->mmap_cache = NULL;
	kmem_cache_free(&vm_area_cachep, vma);
}

struct mm_struct *mm_alloc(void)
{
	struct mm_struct *mm = kmem_cache_alloc(&mm_cachep);

	if (!mm)
		return NULL;
	mm->pgd = pgd_alloc();
	if (!mm->pgd) {
		kmem_cache_free(&mm_cachep, mm);
		return NULL;
	}
	return mm;
}

/*
 * The first area with vm_end > addr, or NULL: the area containing addr, or
 * the one above it (which do_page_fault may grow down if it is a stack).
 */
struct vm_area_struct * __probe find_vma(struct mm_struct *mm, unsigned long addr)
{
	struct vm_area_struct *vma;

	if (!mm)
		return NULL;
	vma = mm->mmap_cache;
	if (vma && vma->vm_end > addr && vma->vm_start <= addr)
		return vma;
	for (vma = mm->mmap; vma; vma = vma->vm_next) {
		if (vma->vm_end > addr) {
			mm->mmap_cache = vma;
			return vma;
		}
	}
	return NULL;
}

struct vm_area_struct *find_vma_intersection(struct mm_struct *mm,
					      unsigned long start, unsigned long end)
{
	struct vm_area_struct *vma = find_vma(mm, start);

	if (vma && vma->vm_start < end)
		return vma;
	return NULL;
}

void insert_vm_struct(struct mm_struct *mm, struct vm_area_struct *vma)
{
	struct vm_area_struct **pp = &mm->mmap;

	while (*pp && (*pp)->vm_start < vma->vm_start)
		pp = &(*pp)->vm_next;
	vma->vm_mm = mm;
	vma->vm_next = *pp;
	*pp = vma;
	mm->map_count++;
}

/*
 * Join neighbouring areas that touch and have the same flags, looking at
 * every junction inside [start, end].  mprotect and mmap call this so a
 * protect/unprotect cycle does not leave the list ever longer.
 */
void merge_segments(struct mm_struct *mm, unsigned long start, unsigned long end)
{
	struct vm_area_struct *prev = mm->mmap, *next;

	while (prev && (next = prev->vm_next)) {
		if (prev->vm_end > end)
			break;
		if (prev->vm_end >= start && prev->vm_end == next->vm_start &&
		    prev->vm_flags == next->vm_flags &&
		    prev->vm_page_prot == next->vm_page_prot) {
			prev->vm_end = next->vm_end;
			prev->vm_next = next->vm_next;
			mm->map_count--;
			vm_area_free(next);
			continue;
		}
		prev = next;
	}
}

/* First gap of len bytes at or above addr (or TASK_UNMAPPED_BASE). */
unsigned long get_unmapped_area(struct mm_struct *mm, unsigned long addr,
				unsigned long len)
{
	struct vm_area_struct *vma;

	if (len > TASK_SIZE)
		return 0;
	addr = addr ? PAGE_ALIGN(addr) : TASK_UNMAPPED_BASE;
	for (vma = find_vma(mm, addr);; vma = vma->vm_next) {
		if (addr > TASK_SIZE - len)
			return 0;
		if (!vma || addr + len <= vma->vm_start)
			return addr;
		addr = vma->vm_end;
	}
}

static unsigned long prot_to_vm_flags(unsigned long prot)
{
	return ((prot & PROT_READ) ? VM_READ : 0) |
	       ((prot & PROT_WRITE) ? VM_WRITE : 0) |
	       ((prot & PROT_EXEC) ? VM_EXEC : 0);
}

/* Anonymous memory only: there are no files. */
unsigned long do_mmap(struct mm_struct *mm, unsigned long addr, unsigned long len,
		      unsigned long prot, unsigned long flags)
{
	struct vm_area_struct *vma;

	if (!len)
		return -EINVAL;
	len = PAGE_ALIGN(len);
	if (!len || len > TASK_SIZE)
		return -ENOMEM;
	if (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC))
		return -EINVAL;
	if ((flags & MAP_TYPE) != MAP_PRIVATE)
		return -EINVAL;

	if (flags & MAP_FIXED) {
		if (addr & ~PAGE_MASK)
			return -EINVAL;
		if (addr > TASK_SIZE - len)
			return -EINVAL;
	} else {
		unsigned long hint = addr;
		addr = 0;
		if (hint && PAGE_ALIGN(hint) <= TASK_SIZE - len &&
		    !find_vma_intersection(mm, PAGE_ALIGN(hint), PAGE_ALIGN(hint) + len))
			addr = PAGE_ALIGN(hint);
		if (!addr)
			addr = get_unmapped_area(mm, 0, len);
		if (!addr)
			return -ENOMEM;
	}

	vma = vm_area_alloc();
	if (!vma)
		return -ENOMEM;
	if (flags & MAP_FIXED) {
		int err = do_munmap(mm, addr, len);
		if (err) {
			vm_area_free(vma);
			return err;
		}
	}
	vma->vm_start = addr;
	vma->vm_end = addr + len;
	vma->vm_flags = prot_to_vm_flags(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC;
	vma->vm_page_prot = vm_get_page_prot(vma->vm_flags);
	insert_vm_struct(mm, vma);
	merge_segments(mm, addr, addr + len);
	return addr;
}

/*
 * Remove [addr, addr + len) from the address space: free its pages, and
 * trim, split or drop the areas it overlaps.
 */
int do_munmap(struct mm_struct *mm, unsigned long addr, unsigned long len)
{
	struct vm_area_struct **pp, *vma;
	unsigned long end;

	if ((addr & ~PAGE_MASK) || addr > TASK_SIZE || len > TASK_SIZE - addr)
		return -EINVAL;
	len = PAGE_ALIGN(len);
	if (!len)
		return -EINVAL;
	end = addr + len;

	pp = &mm->mmap;
	while ((vma = *pp) != NULL) {
		unsigned long s, e;

		if (vma->vm_end <= addr) {
			pp = &vma->vm_next;
			continue;
		}
		if (vma->vm_start >= end)
			break;
		s = max(addr, vma->vm_start);
		e = min(end, vma->vm_end);
		if (s > vma->vm_start && e < vma->vm_end) {
			/* a hole in the middle: split in two */
			struct vm_area_struct *tail = vm_area_alloc();
			if (!tail)
				return -ENOMEM;
			*tail = *vma;
			tail->vm_start = e;
			vma->vm_end = s;
			vma->vm_next = tail;
			mm->map_count++;
			zap_page_range(mm, s, e - s);
			break;
		}
		zap_page_range(mm, s, e - s);
		if (s == vma->vm_start && e == vma->vm_end) {
			*pp = vma->vm_next;
			mm->map_count--;
			vm_area_free(vma);
			continue;
		}
		if (s == vma->vm_start)
			vma->vm_start = e;
		else
			vma->vm_end = s;
		pp = &vma->vm_next;
	}
	mm->mmap_cache = NULL;
	return 0;
}

/*
 * Grow a VM_GROWSDOWN area down to cover address (do_page_fault calls this
 * for a fault just below the stack).
 */
int expand_stack(struct vm_area_struct *vma, unsigned long address)
{
	struct vm_area_struct *prev;

	address &= PAGE_MASK;
	if (vma->vm_end - address > STACK_LIMIT)
		return -ENOMEM;
	for (prev = vma->vm_mm->mmap; prev && prev != vma; prev = prev->vm_next)
		if (prev->vm_end > address)
			return -ENOMEM;
	vma->vm_start = address;
	return 0;
}

/* ---- system calls -------------------------------------------------- */

struct mmap_arg_struct {
	unsigned long addr;
	unsigned long len;
	unsigned long prot;
	unsigned long flags;
	unsigned long fd;
	unsigned long offset;
};

/* old mmap (90): one pointer to six arguments. */
asmlinkage long sys_old_mmap(struct mmap_arg_struct *arg)
{
	struct mmap_arg_struct a;

	if (copy_from_user(&a, arg, sizeof(a)))
		return -EFAULT;
	if (a.offset & ~PAGE_MASK)
		return -EINVAL;
	if (!(a.flags & MAP_ANONYMOUS))
		return -ENODEV;		/* no files to map */
	return do_mmap(current->mm, a.addr, a.len, a.prot, a.flags);
}

asmlinkage long sys_munmap(unsigned long addr, size_t len)
{
	return do_munmap(current->mm, addr, len);
}

/*
 * brk (45): move the end of the heap.  The heap is demand-zero anonymous
 * memory just above the data segment.
 */
asmlinkage long sys_brk(unsigned long brk)
{
	struct mm_struct *mm = current->mm;
	unsigned long newbrk, oldbrk;

	if (brk < mm->start_brk)
		return mm->brk;
	newbrk = PAGE_ALIGN(brk);
	oldbrk = PAGE_ALIGN(mm->brk);
	if (oldbrk == newbrk)
		return mm->brk = brk;
	if (brk <= mm->brk) {
		if (do_munmap(mm, newbrk, oldbrk - newbrk))
			return mm->brk;
		return mm->brk = brk;
	}
	if (newbrk > STACK_TOP - STACK_LIMIT ||
	    find_vma_intersection(mm, oldbrk, newbrk + PAGE_SIZE))
		return mm->brk;
	if (IS_ERR_VALUE(do_mmap(mm, oldbrk, newbrk - oldbrk,
				 PROT_READ | PROT_WRITE | PROT_EXEC,
				 MAP_FIXED | MAP_PRIVATE)))
		return mm->brk;
	return mm->brk = brk;
}
