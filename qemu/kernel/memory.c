/*
 * memory.c - page tables and the resolution of valid page faults.
 *
 * The kernel's half of every page directory (PDEs 768-1023) maps all of RAM
 * at PAGE_OFFSET; the tables are built once at boot and every process
 * directory copies those PDEs, so kernel mappings never need syncing.
 *
 * handle_mm_fault is where do_page_fault sends an access the vm area allows
 * (the 2.x split: fault.c decides *whether* an access is legal, memory.c
 * makes it work).  Only anonymous memory exists here, so there are two
 * cases:
 *   - no page yet: do_anonymous_page maps a fresh zeroed page, writable at
 *     once if the area is writable (one fault per fresh page);
 *   - a store to a present read-only page of a writable area (what
 *     mprotect(RW) leaves behind, see mprotect.c): do_wp_page.  The page is
 *     private to the one process, so "copy on write" is just setting the
 *     write bit.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "mm.h"
#include "sched.h"
#include "string.h"
#include "system.h"

pgd_t swapper_pg_dir[PTRS_PER_PGD] __aligned(PAGE_SIZE) __section(".bss.page_aligned");

#define BOOT_MAPPED_END (16UL << 20)	/* what boot.S mapped at PAGE_OFFSET */

/*
 * Map [0, mem_end) at PAGE_OFFSET with 4 KiB pages, using page tables taken
 * from *first_free_phys on, and switch to swapper_pg_dir.  The boot
 * identity mapping goes away with the switch.
 */
void paging_init(unsigned long mem_end_phys, unsigned long *first_free_phys)
{
	unsigned long phys = 0;
	unsigned int pgd_i = pgd_index(PAGE_OFFSET);

	memset(swapper_pg_dir, 0, sizeof(swapper_pg_dir));
	while (phys < mem_end_phys) {
		unsigned long table_phys = *first_free_phys;
		pte_t *table;
		int i;

		if (table_phys + PAGE_SIZE > BOOT_MAPPED_END)
			panic("paging_init: early page tables beyond the boot mapping");
		*first_free_phys += PAGE_SIZE;
		table = __va(table_phys);
		for (i = 0; i < PTRS_PER_PTE; i++, phys += PAGE_SIZE)
			table[i] = phys < mem_end_phys ? (phys | PAGE_KERNEL) : 0;
		swapper_pg_dir[pgd_i++] = table_phys | _KERNPG_TABLE;
	}
	write_cr3(__pa(swapper_pg_dir));
}

/* A new page directory: empty user half, shared kernel half. */
pgd_t *pgd_alloc(void)
{
	pgd_t *pgd = (pgd_t *)get_zeroed_page();

	if (pgd)
		memcpy(pgd + USER_PGD_PTRS, swapper_pg_dir + USER_PGD_PTRS,
		       (PTRS_PER_PGD - USER_PGD_PTRS) * sizeof(pgd_t));
	return pgd;
}

pte_t *pte_lookup(pgd_t *pgd, unsigned long addr)
{
	pgd_t entry = pgd[pgd_index(addr)];

	if (!pgd_present(entry))
		return NULL;
	return pgd_table(entry) + pte_index(addr);
}

pte_t *pte_alloc(pgd_t *pgd, unsigned long addr)
{
	pgd_t *entry = &pgd[pgd_index(addr)];

	if (!pgd_present(*entry)) {
		unsigned long table = get_zeroed_page();
		if (!table)
			return NULL;
		*entry = __pa(table) | _PAGE_TABLE;
	}
	return pgd_table(*entry) + pte_index(addr);
}

/*
 * The PTE protection for pages of an area with these flags, 2.x style: a
 * writable private area gets PAGE_COPY (read-only), so the first store to a
 * page that is already present takes a write fault (do_wp_page).
 */
unsigned long vm_get_page_prot(unsigned long vm_flags)
{
	if (!(vm_flags & VM_ACCESS))
		return PAGE_NONE;
	if (vm_flags & VM_WRITE)
		return (vm_flags & VM_SHARED) ? PAGE_SHARED : PAGE_COPY;
	return PAGE_READONLY;
}

/* First touch of an anonymous page: a zeroed page, writable if the area is. */
int __probe do_anonymous_page(struct task_struct *tsk, struct vm_area_struct *vma,
			      unsigned long address, int write_access, pte_t *pte)
{
	unsigned long page = get_zeroed_page();
	pte_t entry;

	(void)write_access;
	if (!page)
		return -1;
	entry = __pa(page) | vma->vm_page_prot;
	if (vma->vm_flags & VM_WRITE)
		entry |= _PAGE_RW | _PAGE_DIRTY;
	*pte = entry;
	tsk->mm->rss++;
	return 1;
}

/*
 * A store to a present, read-only page in a writable area.  Our anonymous
 * pages always have exactly one user (no fork, no sharing), so the page can
 * simply be made writable; a shared page would be copied first.
 */
int __probe do_wp_page(struct task_struct *tsk, struct vm_area_struct *vma,
		       unsigned long address, pte_t *pte)
{
	pte_t entry = *pte;
	unsigned long old_page = pte_page(entry);
	struct page *p = &mem_map[__pa(old_page) >> PAGE_SHIFT];

	(void)vma;
	if (p->count > 1) {
		unsigned long new_page = __get_free_page();
		if (!new_page)
			return -1;
		memcpy((void *)new_page, (void *)old_page, PAGE_SIZE);
		free_page(old_page);
		entry = __pa(new_page) | (entry & ~PAGE_MASK);
		tsk->mm->rss++;
	}
	*pte = entry | _PAGE_RW | _PAGE_DIRTY | _PAGE_ACCESSED;
	flush_tlb_one(address);
	return 1;
}

int __probe handle_pte_fault(struct task_struct *tsk, struct vm_area_struct *vma,
			     unsigned long address, int write_access, pte_t *pte)
{
	pte_t entry = *pte;

	if (!pte_present(entry))
		return do_anonymous_page(tsk, vma, address, write_access, pte);
	if (write_access) {
		if (!pte_write(entry))
			return do_wp_page(tsk, vma, address, pte);
		entry |= _PAGE_DIRTY;
	}
	/* present and allowed: a stale TLB entry; refresh it */
	*pte = entry | _PAGE_ACCESSED;
	flush_tlb_one(address);
	return 1;
}

/*
 * Resolve a fault do_page_fault found legal for this vma.  Returns 1 when
 * the access can be retried, -1 when out of memory.
 */
int __probe handle_mm_fault(struct task_struct *tsk, struct vm_area_struct *vma,
			    unsigned long address, int write_access)
{
	pte_t *pte = pte_alloc(vma->vm_mm->pgd, address);

	if (!pte)
		return -1;
	return handle_pte_fault(tsk, vma, address, write_access, pte);
}

/* Unmap and free the pages of [start, start + size). */
void zap_page_range(struct mm_struct *mm, unsigned long start, unsigned long size)
{
	unsigned long addr, end = start + size;

	for (addr = start; addr < end; addr += PAGE_SIZE) {
		pte_t *pte = pte_lookup(mm->pgd, addr);
		if (!pte) {
			/* no table: skip to the next 4 MiB boundary */
			addr = (addr | ((1UL << PGDIR_SHIFT) - 1)) - PAGE_SIZE + 1;
			continue;
		}
		if (pte_present(*pte)) {
			free_page(pte_page(*pte));
			mm->rss--;
			*pte = 0;
			flush_tlb_one(addr);
		}
	}
}

/*
 * exec's eager mapping: make sure a page is present at addr with at least
 * prot, and return its kernel address.
 */
int map_user_page(struct mm_struct *mm, unsigned long addr, unsigned long prot,
		  unsigned long *kaddr)
{
	pte_t *pte = pte_alloc(mm->pgd, addr);

	if (!pte)
		return -1;
	if (!pte_present(*pte)) {
		unsigned long page = get_zeroed_page();
		if (!page)
			return -1;
		*pte = __pa(page) | prot;
		mm->rss++;
	} else {
		*pte |= prot;
	}
	flush_tlb_one(addr);
	*kaddr = pte_page(*pte);
	return 0;
}
