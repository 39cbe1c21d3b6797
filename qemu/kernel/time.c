/*
 * time.c - the 100 Hz PIT tick: jiffies and per-task time accounting.
 *
 * As in 2.x, each tick is charged to the current task as user time or
 * system time according to the privilege level of the code the timer
 * interrupted (the saved cs), which is what times() reports.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "io.h"
#include "ptrace.h"
#include "sched.h"
#include "irq.h"
#include "timex.h"

#define PIT_CH0  0x40
#define PIT_CMD  0x43
#define PIT_HZ   1193182
#define LATCH    ((PIT_HZ + HZ / 2) / HZ)

volatile unsigned long jiffies;

static void do_timer(unsigned int irq, struct pt_regs *regs)
{
	(void)irq;
	jiffies++;
	if (user_mode(regs))
		current->utime++;
	else
		current->stime++;
}

void time_init(void)
{
	outb(0x34, PIT_CMD);		/* channel 0, lobyte/hibyte, mode 2 */
	outb(LATCH & 0xff, PIT_CH0);
	outb(LATCH >> 8, PIT_CH0);
	request_irq(0, do_timer);
}
