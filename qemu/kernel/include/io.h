/* Port I/O. */
#ifndef _LAB_IO_H
#define _LAB_IO_H
#include "types.h"

static inline void outb(u8 v, u16 port)
{
	__asm__ __volatile__("outb %0,%1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ __volatile__("inb %1,%0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void outl(u32 v, u16 port)
{
	__asm__ __volatile__("outl %0,%1" : : "a"(v), "Nd"(port));
}

/* A short delay for old ISA devices (PIC, PIT): write to an unused port. */
static inline void io_delay(void)
{
	__asm__ __volatile__("outb %%al,$0x80" : : "a"(0));
}

#endif
