/*
 * desc.c - the GDT, the TSS and the IDT.
 *
 * Flat 4 GiB segments for the kernel (ring 0) and for user space (ring 3),
 * at the selectors Linux 2.x used, so a signal frame's cs/ss read the same
 * (0x23/0x2b).  One TSS: all it is used for is ss0:esp0, the kernel stack
 * the CPU switches to when user code traps or is interrupted.
 */
#include "types.h"
#include "compiler.h"
#include "segment.h"
#include "desc.h"
#include "string.h"

struct tss_struct {
	u16 back_link, __blh;
	u32 esp0;
	u16 ss0, __ss0h;
	u32 esp1;
	u16 ss1, __ss1h;
	u32 esp2;
	u16 ss2, __ss2h;
	u32 cr3, eip, eflags;
	u32 eax, ecx, edx, ebx, esp, ebp, esi, edi;
	u16 es, __esh, cs, __csh, ss, __ssh, ds, __dsh, fs, __fsh, gs, __gsh;
	u16 ldt, __ldth;
	u16 trace, io_bitmap_base;
} __packed;

static struct tss_struct init_tss __aligned(128);

static u64 gdt_table[GDT_ENTRIES] __aligned(8);
struct gate idt_table[256] __aligned(8);

struct desc_ptr {
	u16 limit;
	u32 base;
} __packed;

static u64 make_seg(u32 base, u32 limit, u8 access, u8 flags)
{
	u64 d;
	d  = (u64)(limit & 0xffff);
	d |= (u64)(base & 0xffffff) << 16;
	d |= (u64)access << 40;
	d |= (u64)((limit >> 16) & 0xf) << 48;
	d |= (u64)(flags & 0xf) << 52;
	d |= (u64)((base >> 24) & 0xff) << 56;
	return d;
}

void set_gate(unsigned int vector, void (*handler)(void), unsigned int type,
	      unsigned int dpl)
{
	u32 off = (u32)handler;
	struct gate *g = &idt_table[vector];
	g->offset_low = off & 0xffff;
	g->selector = __KERNEL_CS;
	g->zero = 0;
	g->type_attr = 0x80 | (dpl << 5) | type;
	g->offset_high = off >> 16;
}

void set_tss_esp0(unsigned long esp0)
{
	init_tss.esp0 = esp0;
}

void gdt_init(void)
{
	struct desc_ptr gdtr;

	/* access: P | DPL | S | type;  flags: G (4 KiB) | D (32-bit) */
	gdt_table[0] = 0;
	gdt_table[1] = 0;				/* unused, like 2.x */
	gdt_table[__KERNEL_CS >> 3] = make_seg(0, 0xfffff, 0x9a, 0xc);
	gdt_table[__KERNEL_DS >> 3] = make_seg(0, 0xfffff, 0x92, 0xc);
	gdt_table[__USER_CS >> 3]   = make_seg(0, 0xfffff, 0xfa, 0xc);
	gdt_table[__USER_DS >> 3]   = make_seg(0, 0xfffff, 0xf2, 0xc);

	memset(&init_tss, 0, sizeof(init_tss));
	init_tss.ss0 = __KERNEL_DS;
	/* I/O bitmap offset past the limit: user space gets no port access */
	init_tss.io_bitmap_base = sizeof(init_tss);
	gdt_table[__TSS_SEL >> 3] = make_seg((u32)&init_tss, sizeof(init_tss) - 1, 0x89, 0x0);

	gdtr.limit = sizeof(gdt_table) - 1;
	gdtr.base = (u32)gdt_table;
	__asm__ __volatile__(
		"lgdt %0\n\t"
		"ljmp %1, $1f\n"
		"1:\n\t"
		"movl %2, %%eax\n\t"
		"movl %%eax, %%ds\n\t"
		"movl %%eax, %%es\n\t"
		"movl %%eax, %%ss\n\t"
		"xorl %%eax, %%eax\n\t"
		"movl %%eax, %%fs\n\t"
		"movl %%eax, %%gs\n\t"
		"movw %3, %%ax\n\t"
		"ltr %%ax\n\t"
		: : "m"(gdtr), "i"(__KERNEL_CS), "i"(__KERNEL_DS), "i"(__TSS_SEL)
		: "eax", "memory");
}

void idt_load(void)
{
	struct desc_ptr idtr;
	idtr.limit = sizeof(idt_table) - 1;
	idtr.base = (u32)idt_table;
	__asm__ __volatile__("lidt %0" : : "m"(idtr));
}
