/*
 * Memory management the 2.x way: an mm_struct per process holds its page
 * directory and a sorted, singly linked list of vm areas.  Page faults are
 * checked against the area's flags (do_page_fault) and resolved by
 * handle_mm_fault.
 */
#ifndef _LAB_MM_H
#define _LAB_MM_H
#include "types.h"
#include "compiler.h"
#include "page.h"

/* vm_flags */
#define VM_READ       0x0001
#define VM_WRITE      0x0002
#define VM_EXEC       0x0004
#define VM_SHARED     0x0008
#define VM_MAYREAD    0x0010
#define VM_MAYWRITE   0x0020
#define VM_MAYEXEC    0x0040
#define VM_MAYSHARE   0x0080
#define VM_GROWSDOWN  0x0100
#define VM_GROWSUP    0x0200
#define VM_DENYWRITE  0x0800
#define VM_EXECUTABLE 0x1000

#define VM_ACCESS (VM_READ | VM_WRITE | VM_EXEC)

/* mmap / mprotect ABI */
#define PROT_NONE  0x0
#define PROT_READ  0x1
#define PROT_WRITE 0x2
#define PROT_EXEC  0x4

#define MAP_SHARED    0x01
#define MAP_PRIVATE   0x02
#define MAP_TYPE      0x0f
#define MAP_FIXED     0x10
#define MAP_ANONYMOUS 0x20

/* Where mmap looks for free space (TASK_SIZE / 3, as in 2.x). */
#define TASK_UNMAPPED_BASE 0x40000000UL
/* The user stack: 64 KiB mapped at exec, may grow down to STACK_LIMIT. */
#define STACK_TOP     0xBFFFF000UL
#define STACK_SIZE    (64 * 1024UL)
#define STACK_LIMIT   (8 * 1024 * 1024UL)

struct mm_struct;

struct vm_area_struct {
	struct mm_struct *vm_mm;
	unsigned long vm_start;		/* first byte */
	unsigned long vm_end;		/* first byte after */
	unsigned long vm_flags;
	unsigned long vm_page_prot;	/* PTE bits for pages in this area */
	struct vm_area_struct *vm_next;	/* sorted by address */
};

struct mm_struct {
	pgd_t *pgd;
	struct vm_area_struct *mmap;		/* list of areas */
	struct vm_area_struct *mmap_cache;	/* last find_vma result */
	int map_count;
	unsigned long start_code, end_code, start_data, end_data;
	unsigned long start_brk, brk, start_stack;
	unsigned long arg_start, arg_end, env_start, env_end;
	unsigned long rss;
};

struct task_struct;

/* page_alloc.c */
struct page {
	unsigned short count;	/* users; 0 = free */
	unsigned short flags;
	struct page *next;	/* free list link */
};
#define PG_reserved 0x1
extern struct page *mem_map;
extern unsigned long max_mapnr;
extern unsigned long nr_free_pages_count;
unsigned long __get_free_page(void);	/* kernel virtual address, 0 on failure */
unsigned long get_zeroed_page(void);
void free_page(unsigned long addr);
void mem_map_init(unsigned long max_pfn, unsigned long *first_free_phys);
void free_area_init_range(unsigned long start_phys, unsigned long end_phys);
unsigned long nr_free_pages(void);
unsigned long nr_total_pages(void);

/* memory.c */
extern pgd_t swapper_pg_dir[PTRS_PER_PGD];
void paging_init(unsigned long mem_end_phys, unsigned long *first_free_phys);
pgd_t *pgd_alloc(void);
pte_t *pte_lookup(pgd_t *pgd, unsigned long addr);	/* NULL if no table */
pte_t *pte_alloc(pgd_t *pgd, unsigned long addr);	/* NULL if no memory */
int handle_mm_fault(struct task_struct *tsk, struct vm_area_struct *vma,
		    unsigned long address, int write_access);
void zap_page_range(struct mm_struct *mm, unsigned long start, unsigned long size);
int map_user_page(struct mm_struct *mm, unsigned long addr, unsigned long prot,
		  unsigned long *kaddr);
unsigned long vm_get_page_prot(unsigned long vm_flags);

/* mmap.c */
struct vm_area_struct *find_vma(struct mm_struct *mm, unsigned long addr);
unsigned long get_unmapped_area(struct mm_struct *mm, unsigned long addr,
				unsigned long len);
struct vm_area_struct *find_vma_intersection(struct mm_struct *mm,
					      unsigned long start, unsigned long end);
struct vm_area_struct *vm_area_alloc(void);
void vm_area_free(struct vm_area_struct *vma);
void insert_vm_struct(struct mm_struct *mm, struct vm_area_struct *vma);
void merge_segments(struct mm_struct *mm, unsigned long start, unsigned long end);
unsigned long do_mmap(struct mm_struct *mm, unsigned long addr, unsigned long len,
		      unsigned long prot, unsigned long flags);
int do_munmap(struct mm_struct *mm, unsigned long addr, unsigned long len);
int expand_stack(struct vm_area_struct *vma, unsigned long address);
struct mm_struct *mm_alloc(void);
void mmap_init(void);

/* mprotect.c */
void change_protection(struct mm_struct *mm, unsigned long start,
		       unsigned long end, unsigned long newprot);

/* fault.c */
struct pt_regs;
asmlinkage void do_page_fault(struct pt_regs *regs, unsigned long error_code);

/* kmem.c: fixed-size object caches carved from whole pages */
struct kmem_cache {
	const char *name;
	unsigned int size;
	void *free;		/* singly linked free objects */
	unsigned long in_use;
	unsigned long pages;
};
void kmem_cache_init(struct kmem_cache *c, const char *name, unsigned int size);
void *kmem_cache_alloc(struct kmem_cache *c);
void kmem_cache_free(struct kmem_cache *c, void *obj);

#endif
