/*
 * page_alloc.c - the physical page allocator.
 *
 * One struct page per physical page frame (mem_map, like 2.x) and a LIFO
 * free list threaded through them.  The list is built from the multiboot
 * memory map at boot; anything below the first free address (the kernel
 * image, init's image, the early page tables, mem_map itself) and the low
 * 1 MiB stay reserved.  LIFO keeps reuse deterministic and cache-warm.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "mm.h"
#include "string.h"

struct page *mem_map;
unsigned long max_mapnr;
static struct page *free_list;
static unsigned long free_count, total_count;

/* Allocate mem_map from the early allocator; every page starts reserved. */
void mem_map_init(unsigned long max_pfn, unsigned long *first_free_phys)
{
	unsigned long i, bytes = PAGE_ALIGN(max_pfn * sizeof(struct page));

	mem_map = __va(*first_free_phys);
	*first_free_phys += bytes;
	max_mapnr = max_pfn;
	for (i = 0; i < max_pfn; i++) {
		mem_map[i].count = 1;
		mem_map[i].flags = PG_reserved;
		mem_map[i].next = NULL;
	}
}

/* Hand the whole pages of [start, end) to the allocator. */
void free_area_init_range(unsigned long start_phys, unsigned long end_phys)
{
	unsigned long pfn = PAGE_ALIGN(start_phys) >> PAGE_SHIFT;
	unsigned long last = end_phys >> PAGE_SHIFT;

	if (last > max_mapnr)
		last = max_mapnr;
	/* push in descending order so allocation starts at the lowest page */
	while (last > pfn) {
		struct page *p = &mem_map[--last];
		if (!(p->flags & PG_reserved))
			continue;
		p->flags = 0;
		p->count = 0;
		p->next = free_list;
		free_list = p;
		free_count++;
		total_count++;
	}
}

unsigned long __get_free_page(void)
{
	struct page *p = free_list;

	if (!p)
		return 0;
	free_list = p->next;
	p->next = NULL;
	p->count = 1;
	free_count--;
	return (unsigned long)__va((unsigned long)(p - mem_map) << PAGE_SHIFT);
}

unsigned long get_zeroed_page(void)
{
	unsigned long page = __get_free_page();
	if (page)
		memset((void *)page, 0, PAGE_SIZE);
	return page;
}

void free_page(unsigned long addr)
{
	unsigned long pfn = __pa(addr) >> PAGE_SHIFT;
	struct page *p;

	if (pfn >= max_mapnr)
		panic("free_page: bad address %08lx", addr);
	p = &mem_map[pfn];
	if (p->flags & PG_reserved)
		return;
	if (!p->count)
		panic("free_page: page %08lx already free", addr);
	if (--p->count)
		return;
	p->next = free_list;
	free_list = p;
	free_count++;
}

unsigned long nr_free_pages(void)
{
	return free_count;
}

unsigned long nr_total_pages(void)
{
	return total_count;
}
