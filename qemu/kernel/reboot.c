/*
 * reboot.c - every way a run ends (qemu/README.md, "How a run ends").
 *
 *   reboot(2) RESTART/HALT/POWER_OFF -> reset the machine; under -no-reboot
 *                                       QEMU then exits with status 0
 *   init exits                       -> isa-debug-exit value 1   (status 3)
 *   Oops (traps.c: die)              -> isa-debug-exit value 0x0e (status 29)
 *   panic                            -> isa-debug-exit value 0x0f (status 31)
 *
 * isa-debug-exit (iobase 0xf4) makes QEMU exit with (value << 1) | 1.  If the
 * device is missing the write does nothing and we halt for good.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "io.h"
#include "system.h"

#define DEBUG_EXIT_PORT 0xf4

__noreturn void qemu_exit(unsigned int value)
{
	cli();
	outl(value, DEBUG_EXIT_PORT);
	for (;;)
		__asm__ __volatile__("hlt");
}

/*
 * Reset: pulse the CPU reset line through the keyboard controller, and if
 * that does nothing, triple-fault (an empty IDT, then an exception).
 */
__noreturn void machine_restart(void)
{
	static const struct {
		u16 limit;
		u32 base;
	} __packed empty_idt = { 0, 0 };
	int i;

	cli();
	for (i = 0; i < 100000; i++) {
		if (!(inb(0x64) & 0x02))	/* input buffer empty */
			break;
	}
	outb(0xfe, 0x64);
	for (i = 0; i < 1000000; i++)
		io_delay();
	__asm__ __volatile__("lidt %0\n\tint3" : : "m"(empty_idt));
	for (;;)
		__asm__ __volatile__("hlt");
}

__noreturn void panic(const char *fmt, ...)
{
	static char buf[256];
	va_list ap;

	cli();
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printk("Kernel panic: %s\n", buf);
	qemu_exit(0x0f);
}
