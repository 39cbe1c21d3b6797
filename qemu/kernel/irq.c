/*
 * irq.c - the two 8259A PICs and hardware interrupt dispatch.
 *
 * The BIOS leaves IRQ 0-7 on vectors 8-15, on top of the CPU exceptions, so
 * the PICs are reprogrammed to 0x20-0x2f.  Only the timer (IRQ 0) is
 * unmasked; everything else that might still arrive (a spurious IRQ 7/15)
 * is acknowledged and ignored.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "io.h"
#include "ptrace.h"
#include "desc.h"
#include "irq.h"

#define PIC1_CMD  0x20
#define PIC1_DATA 0x21
#define PIC2_CMD  0xA0
#define PIC2_DATA 0xA1
#define PIC_EOI   0x20

extern void (*const irq_entries[NR_IRQS])(void);

static irq_handler_t irq_handlers[NR_IRQS];
static u16 irq_mask = 0xffff & ~(1 << 2);	/* all masked but the cascade */
unsigned long irq_count[NR_IRQS];

static void pic_write_mask(void)
{
	outb(irq_mask & 0xff, PIC1_DATA);
	outb(irq_mask >> 8, PIC2_DATA);
}

static void pic_remap(void)
{
	/* ICW1: edge triggered, cascade, ICW4 follows */
	outb(0x11, PIC1_CMD); io_delay();
	outb(0x11, PIC2_CMD); io_delay();
	/* ICW2: vector offsets */
	outb(FIRST_EXTERNAL_VECTOR, PIC1_DATA); io_delay();
	outb(FIRST_EXTERNAL_VECTOR + 8, PIC2_DATA); io_delay();
	/* ICW3: slave on IRQ 2 */
	outb(0x04, PIC1_DATA); io_delay();
	outb(0x02, PIC2_DATA); io_delay();
	/* ICW4: 8086 mode */
	outb(0x01, PIC1_DATA); io_delay();
	outb(0x01, PIC2_DATA); io_delay();
	pic_write_mask();
}

int request_irq(unsigned int irq, irq_handler_t handler)
{
	if (irq >= NR_IRQS || irq_handlers[irq])
		return -1;
	irq_handlers[irq] = handler;
	irq_mask &= ~(1 << irq);
	pic_write_mask();
	return 0;
}

static void ack_irq(unsigned int irq)
{
	if (irq >= 8)
		outb(PIC_EOI, PIC2_CMD);
	outb(PIC_EOI, PIC1_CMD);
}

/* Called from the irqN_interrupt stubs in entry.S, interrupts disabled. */
asmlinkage void do_IRQ(unsigned int irq, struct pt_regs *regs)
{
	irq_count[irq]++;
	/* A spurious IRQ 7/15 has no ISR bit set: no EOI for those. */
	if (irq == 7 || irq == 15) {
		outb(0x0b, irq == 7 ? PIC1_CMD : PIC2_CMD);	/* read ISR */
		if (!(inb(irq == 7 ? PIC1_CMD : PIC2_CMD) & 0x80)) {
			if (irq == 15)
				outb(PIC_EOI, PIC1_CMD);
			return;
		}
	}
	ack_irq(irq);
	if (irq_handlers[irq])
		irq_handlers[irq](irq, regs);
}

void init_IRQ(void)
{
	unsigned int i;

	pic_remap();
	for (i = 0; i < NR_IRQS; i++)
		set_intr_gate(FIRST_EXTERNAL_VECTOR + i, irq_entries[i]);
}
