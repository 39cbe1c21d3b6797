/* i386 two-level paging, 4 KiB pages, kernel at PAGE_OFFSET like Linux 2.x. */
#ifndef _LAB_PAGE_H
#define _LAB_PAGE_H

#define PAGE_SHIFT  12
#define PAGE_SIZE   (1UL << PAGE_SHIFT)
#define PAGE_MASK   (~(PAGE_SIZE - 1))
#define PAGE_ALIGN(x) (((x) + PAGE_SIZE - 1) & PAGE_MASK)

#define PGDIR_SHIFT 22
#define PTRS_PER_PGD 1024
#define PTRS_PER_PTE 1024

#define PAGE_OFFSET 0xC0000000UL
#define TASK_SIZE   PAGE_OFFSET	/* user space is everything below */
#define USER_PGD_PTRS (TASK_SIZE >> PGDIR_SHIFT)

#define __pa(x) ((unsigned long)(x) - PAGE_OFFSET)
#define __va(x) ((void *)((unsigned long)(x) + PAGE_OFFSET))

/* PTE / PDE bits */
#define _PAGE_PRESENT  0x001
#define _PAGE_RW       0x002
#define _PAGE_USER     0x004
#define _PAGE_PWT      0x008
#define _PAGE_PCD      0x010
#define _PAGE_ACCESSED 0x020
#define _PAGE_DIRTY    0x040

#define _PAGE_TABLE   (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED)
#define _KERNPG_TABLE (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED)

/*
 * The protections a vm area's pages get, 2.x style.  PAGE_NONE is present
 * but supervisor-only, so a user access faults and the page is kept.
 * PAGE_COPY is what a *private* writable area gets on mprotect: read-only,
 * so a store takes a write fault that do_wp_page resolves.
 */
#define PAGE_NONE     (_PAGE_PRESENT | _PAGE_ACCESSED)
#define PAGE_READONLY (_PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED)
#define PAGE_COPY     (_PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED)
#define PAGE_SHARED   (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED)
#define PAGE_KERNEL   (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY)

#ifndef __ASSEMBLER__
typedef unsigned long pte_t;
typedef unsigned long pgd_t;

#define pgd_index(addr) ((addr) >> PGDIR_SHIFT)
#define pte_index(addr) (((addr) >> PAGE_SHIFT) & (PTRS_PER_PTE - 1))
#define pte_present(p) ((p) & _PAGE_PRESENT)
#define pte_write(p)   ((p) & _PAGE_RW)
#define pte_page(p)    ((unsigned long)__va((p) & PAGE_MASK))	/* kernel virtual */
#define pgd_present(p) ((p) & _PAGE_PRESENT)
#define pgd_table(p)   ((pte_t *)__va((p) & PAGE_MASK))
#endif

#endif
