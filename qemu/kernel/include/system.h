/* Control registers, interrupt flag, TLB. */
#ifndef _LAB_SYSTEM_H
#define _LAB_SYSTEM_H
#include "types.h"

#define cli() __asm__ __volatile__("cli" ::: "memory")
#define sti() __asm__ __volatile__("sti" ::: "memory")

static inline unsigned long read_cr0(void)
{
	unsigned long v;
	__asm__ __volatile__("movl %%cr0,%0" : "=r"(v));
	return v;
}

static inline void write_cr0(unsigned long v)
{
	__asm__ __volatile__("movl %0,%%cr0" : : "r"(v) : "memory");
}

static inline unsigned long read_cr2(void)
{
	unsigned long v;
	__asm__ __volatile__("movl %%cr2,%0" : "=r"(v));
	return v;
}

static inline unsigned long read_cr3(void)
{
	unsigned long v;
	__asm__ __volatile__("movl %%cr3,%0" : "=r"(v));
	return v;
}

static inline void write_cr3(unsigned long v)
{
	__asm__ __volatile__("movl %0,%%cr3" : : "r"(v) : "memory");
}

static inline unsigned long read_cr4(void)
{
	unsigned long v;
	__asm__ __volatile__("movl %%cr4,%0" : "=r"(v));
	return v;
}

static inline void write_cr4(unsigned long v)
{
	__asm__ __volatile__("movl %0,%%cr4" : : "r"(v) : "memory");
}

/* Drop one page's translation (i486+). */
static inline void flush_tlb_one(unsigned long addr)
{
	__asm__ __volatile__("invlpg (%0)" : : "r"(addr) : "memory");
}

/* Drop every non-global translation. */
static inline void flush_tlb_all(void)
{
	write_cr3(read_cr3());
}

static inline void cpuid(u32 op, u32 *a, u32 *b, u32 *c, u32 *d)
{
	__asm__ __volatile__("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "0"(op), "2"(0));
}

#endif
