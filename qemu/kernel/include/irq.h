/* Hardware interrupts (irq.c). */
#ifndef _LAB_IRQ_H
#define _LAB_IRQ_H
#include "compiler.h"

#define NR_IRQS 16
#define FIRST_EXTERNAL_VECTOR 0x20

struct pt_regs;
typedef void (*irq_handler_t)(unsigned int irq, struct pt_regs *regs);

void init_IRQ(void);
int request_irq(unsigned int irq, irq_handler_t handler);
asmlinkage void do_IRQ(unsigned int irq, struct pt_regs *regs);
extern unsigned long irq_count[NR_IRQS];

#endif
