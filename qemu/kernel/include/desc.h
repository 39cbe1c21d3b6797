/* Descriptor tables (desc.c). */
#ifndef _LAB_DESC_H
#define _LAB_DESC_H
#include "types.h"

struct gate {
	u16 offset_low;
	u16 selector;
	u8 zero;
	u8 type_attr;
	u16 offset_high;
} __attribute__((packed));

#define GATE_INTERRUPT 0xE	/* clears IF on entry */
#define GATE_TRAP      0xF	/* leaves IF alone */

void gdt_init(void);
void idt_load(void);
void set_gate(unsigned int vector, void (*handler)(void), unsigned int type,
	      unsigned int dpl);
void set_tss_esp0(unsigned long esp0);

#define set_trap_gate(n, h)   set_gate(n, h, GATE_TRAP, 0)
#define set_intr_gate(n, h)   set_gate(n, h, GATE_INTERRUPT, 0)
#define set_system_gate(n, h) set_gate(n, h, GATE_TRAP, 3)	/* callable from ring 3 */

#endif
